"""Reading the registry's events and block headers (the mirror's only chain access).

Guarantees: `logs(a, b)` returns every registry event of blocks a..b (inclusive) in chain
order (block, log index), decoded into the plain values of `domain.mirror`; a node that
refuses a range as too large ("too many results", "block range", "limit") is asked again
with halves of it, down to one block. `block(n)` gives a block's number, hash and parent
hash, what the indexer compares to detect a reorg. Logs of other events of the contract
(AccessControl's role events) are skipped. Decoding uses eth_abi directly: web3's
per-log event processing is the bottleneck of a full reindex otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3

from granular.adapters.chain.artifacts import Artifact
from granular.domain.mirror import (
    BatchIssued,
    CertificateIssued,
    EventMeta,
    OperatorSet,
    RegistryEvent,
    SliceClaimed,
    SliceSplit,
    SliceTransferred,
    SliceWithdrawn,
    WalletClosed,
)
from granular.domain.slices import Kind
from granular.errors import GranularError

_TOO_MANY = ("too many", "block range", "limit", "exceed", "response size", "query returned")


class EventReadFailed(GranularError):
    code = "event_read_failed"


@dataclass(frozen=True, slots=True)
class BlockRef:
    number: int
    hash: str  # 0x-prefixed lower-case hex
    parent_hash: str


def _hex(value: Any) -> str:
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else "0x" + value.lower()
    return "0x" + bytes(value).hex()


def _word(topic: Any) -> bytes:
    return bytes.fromhex(_hex(topic)[2:])


def _uint(topic: Any) -> int:
    return int.from_bytes(_word(topic), "big")


def _address(topic: Any) -> str:
    return to_checksum_address(_word(topic)[12:])


def _signature(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(i['type'] for i in entry['inputs'])})"


Decoder = Callable[[EventMeta, list[Any], bytes], RegistryEvent]


def _decoders() -> dict[str, Decoder]:
    def certificate_issued(meta: EventMeta, topics: list[Any], data: bytes) -> RegistryEvent:
        kind, quantity_wh, data_hash = abi_decode(["uint8", "uint64", "bytes32"], data)
        return CertificateIssued(
            meta=meta,
            certificate_id=_uint(topics[1]),
            owner=_address(topics[2]),
            kind=Kind(kind),
            quantity_wh=quantity_wh,
            data_hash="0x" + data_hash.hex(),
        )

    def batch_issued(meta: EventMeta, topics: list[Any], data: bytes) -> RegistryEvent:
        first, count = abi_decode(["uint256", "uint256"], data)
        return BatchIssued(
            meta=meta, batch_id=_hex(topics[1]), first_certificate_id=first, count=count
        )

    def slice_split(meta: EventMeta, topics: list[Any], data: bytes) -> RegistryEvent:
        ids, quantities, owners = abi_decode(["uint256[]", "uint64[]", "address[]"], data)
        return SliceSplit(
            meta=meta,
            parent_slice_id=_uint(topics[1]),
            certificate_id=_uint(topics[2]),
            child_slice_ids=tuple(ids),
            quantities_wh=tuple(quantities),
            owners=tuple(to_checksum_address(owner) for owner in owners),
        )

    def slice_transferred(meta: EventMeta, topics: list[Any], data: bytes) -> RegistryEvent:
        return SliceTransferred(
            meta=meta,
            slice_id=_uint(topics[1]),
            from_wallet=_address(topics[2]),
            to_wallet=_address(topics[3]),
        )

    def slice_claimed(meta: EventMeta, topics: list[Any], data: bytes) -> RegistryEvent:
        production, quantity_wh = abi_decode(["uint256", "uint64"], data)
        return SliceClaimed(
            meta=meta,
            claim_id=_uint(topics[1]),
            production_slice_id=production,
            consumption_slice_id=_uint(topics[2]),
            quantity_wh=quantity_wh,
        )

    def slice_withdrawn(meta: EventMeta, topics: list[Any], data: bytes) -> RegistryEvent:
        return SliceWithdrawn(meta=meta, slice_id=_uint(topics[1]), owner=_address(topics[2]))

    def wallet_closed(meta: EventMeta, topics: list[Any], data: bytes) -> RegistryEvent:
        return WalletClosed(meta=meta, wallet=_address(topics[1]))

    def operator_set(meta: EventMeta, topics: list[Any], data: bytes) -> RegistryEvent:
        (approved,) = abi_decode(["bool"], data)
        return OperatorSet(
            meta=meta,
            wallet=_address(topics[1]),
            operator=_address(topics[2]),
            approved=bool(approved),
        )

    return {
        "CertificateIssued": certificate_issued,
        "BatchIssued": batch_issued,
        "SliceSplit": slice_split,
        "SliceTransferred": slice_transferred,
        "SliceClaimed": slice_claimed,
        "SliceWithdrawn": slice_withdrawn,
        "WalletClosed": wallet_closed,
        "OperatorSet": operator_set,
    }


class RegistryEventReader:
    """Events and block headers of one registry on one connected chain."""

    def __init__(self, w3: Web3, registry: str, *, max_range_blocks: int = 2_000) -> None:
        self._w3 = w3
        self._address = to_checksum_address(registry)
        self.registry: str = self._address
        self.max_range_blocks = max_range_blocks
        abi = Artifact.load("CertificateRegistry").abi
        by_name = _decoders()
        self._by_topic: dict[str, Decoder] = {}
        for entry in abi:
            if entry.get("type") == "event" and entry["name"] in by_name:
                topic = "0x" + keccak(text=_signature(entry)).hex()
                self._by_topic[topic] = by_name[entry["name"]]

    def head(self) -> int:
        number: int = self._w3.eth.block_number
        return number

    def block(self, number: int) -> BlockRef | None:
        """The block at `number` on the node's canonical chain, None above its head."""
        try:
            found = self._w3.eth.get_block(number)
        except Exception as error:  # web3 raises BlockNotFound above the head
            if type(error).__name__ == "BlockNotFound":
                return None
            raise
        return BlockRef(
            number=int(found["number"]),
            hash=_hex(found["hash"]),
            parent_hash=_hex(found["parentHash"]),
        )

    def logs(self, from_block: int, to_block: int) -> list[RegistryEvent]:
        """Every registry event of blocks from_block..to_block, in chain order."""
        events: list[RegistryEvent] = []
        start = from_block
        span = max(1, min(self.max_range_blocks, to_block - from_block + 1))
        while start <= to_block:
            end = min(to_block, start + span - 1)
            try:
                raw = self._w3.eth.get_logs(
                    {"address": self._address, "fromBlock": start, "toBlock": end}
                )
            except Exception as error:
                message = str(error).lower()
                if span > 1 and any(marker in message for marker in _TOO_MANY):
                    span = max(1, span // 2)
                    continue
                raise EventReadFailed(
                    f"eth_getLogs of blocks {start}..{end} failed: {type(error).__name__}",
                    {"fromBlock": start, "toBlock": end},
                ) from None
            events.extend(self.decode(raw))
            start = end + 1
        return events

    def decode(self, raw_logs: Any) -> list[RegistryEvent]:
        decoded: list[RegistryEvent] = []
        for log in raw_logs:
            if log.get("removed"):
                continue
            topics = list(log["topics"])
            decoder = self._by_topic.get(_hex(topics[0])) if topics else None
            if decoder is None:
                continue
            meta = EventMeta(
                block_number=int(log["blockNumber"]),
                block_hash=_hex(log["blockHash"]),
                tx_hash=_hex(log["transactionHash"]),
                log_index=int(log["logIndex"]),
            )
            data = log["data"]
            decoded.append(decoder(meta, topics, _word(data) if isinstance(data, str) else data))
        decoded.sort(key=lambda event: (event.meta.block_number, event.meta.log_index))
        return decoded
