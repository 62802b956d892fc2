"""The event reader without a chain: raw eth_getLogs entries decode to the mirror's values,
and a node that refuses a range as too large is asked again with halves of it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from granular.adapters.chain.events import EventReadFailed, RegistryEventReader
from granular.domain.mirror import CertificateIssued, OperatorSet, SliceClaimed, SliceSplit
from granular.domain.slices import Kind

REGISTRY = "0x" + "12" * 20
OWNER = to_checksum_address("0x" + "ab" * 20)
OTHER = to_checksum_address("0x" + "cd" * 20)


def topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


def word(value: int | str) -> str:
    if isinstance(value, str):  # an address
        return "0x" + "00" * 12 + value[2:].lower()
    return "0x" + f"{value:064x}"


def log(block: int, index: int, topics: list[str], data: bytes) -> dict[str, Any]:
    return {
        "address": REGISTRY,
        "blockNumber": hex(block),
        "blockHash": "0x" + f"{block:064x}",
        "transactionHash": "0x" + f"{block * 1000 + index:064x}",
        "logIndex": hex(index),
        "topics": topics,
        "data": "0x" + data.hex(),
        "removed": False,
    }


ISSUED = topic("CertificateIssued(uint256,address,uint8,uint64,bytes32)")


def issued_log(block: int, certificate_id: int) -> dict[str, Any]:
    data = abi_encode(["uint8", "uint64", "bytes32"], [1, 1500, b"\x07" * 32])
    return log(block, 0, [ISSUED, word(certificate_id), word(OWNER)], data)


class FakeNode:
    """eth_getLogs over `logs`, refusing ranges wider than `max_range` like Infura does."""

    def __init__(self, logs: list[dict[str, Any]], max_range: int) -> None:
        self.logs = logs
        self.max_range = max_range
        self.ranges: list[tuple[int, int]] = []

    def make_request(self, method: str, params: list[Any]) -> dict[str, Any]:
        assert method == "eth_getLogs"
        start, end = int(params[0]["fromBlock"], 16), int(params[0]["toBlock"], 16)
        self.ranges.append((start, end))
        if end - start + 1 > self.max_range:
            return {"error": {"code": -32005, "message": "query returned more than 10000 results"}}
        found = [e for e in self.logs if start <= int(e["blockNumber"], 16) <= end]
        return {"result": found}


def reader_on(node: FakeNode) -> RegistryEventReader:
    return RegistryEventReader(SimpleNamespace(provider=node), REGISTRY, max_range_blocks=16)  # type: ignore[arg-type]


def test_a_certificate_issued_log_decodes_to_its_values() -> None:
    [event] = reader_on(FakeNode([issued_log(5, 42)], 100)).logs(0, 10)
    assert isinstance(event, CertificateIssued)
    assert (event.certificate_id, event.owner, event.kind, event.quantity_wh) == (
        42,
        OWNER,
        Kind.CONSUMPTION,
        1500,
    )
    assert event.data_hash == "0x" + "07" * 32
    assert (event.meta.block_number, event.meta.log_index) == (5, 0)


def test_split_claim_and_operator_logs_decode() -> None:
    split = log(
        3,
        1,
        [topic("SliceSplit(uint256,uint256,uint256[],uint64[],address[])"), word(1), word(1)],
        abi_encode(["uint256[]", "uint64[]", "address[]"], [[2, 3], [1200, 500], [OTHER, OWNER]]),
    )
    claimed = log(
        3,
        2,
        [topic("SliceClaimed(uint256,uint256,uint256,uint64)"), word(2), word(9)],
        abi_encode(["uint256", "uint64"], [2, 1200]),
    )
    operator = log(
        4,
        0,
        [topic("OperatorSet(address,address,bool)"), word(OWNER), word(OTHER)],
        abi_encode(["bool"], [True]),
    )
    role = log(4, 1, [topic("RoleGranted(bytes32,address,address)"), word(0)], b"")
    events = reader_on(FakeNode([operator, claimed, split, role], 100)).logs(0, 10)
    assert [type(e) for e in events] == [SliceSplit, SliceClaimed, OperatorSet]
    assert events[0] == SliceSplit(events[0].meta, 1, 1, (2, 3), (1200, 500), (OTHER, OWNER))
    assert events[1] == SliceClaimed(events[1].meta, 2, 2, 9, 1200)
    assert events[2] == OperatorSet(events[2].meta, OWNER, OTHER, True)


def test_a_range_refused_as_too_large_is_read_in_halves() -> None:
    node = FakeNode([issued_log(block, block) for block in range(1, 31)], max_range=4)
    events = reader_on(node).logs(1, 30)
    assert [e.meta.block_number for e in events] == list(range(1, 31))
    assert all(end - start + 1 <= 16 for start, end in node.ranges)
    assert (1, 16) in node.ranges and (1, 4) in node.ranges


def test_another_rpc_error_is_one_error_naming_the_blocks() -> None:
    class Broken(FakeNode):
        def make_request(self, method: str, params: list[Any]) -> dict[str, Any]:
            return {"error": {"code": -32000, "message": "header not found"}}

    with pytest.raises(EventReadFailed) as error:
        reader_on(Broken([], 100)).logs(7, 9)
    assert error.value.details == {"fromBlock": 7, "toBlock": 9}
