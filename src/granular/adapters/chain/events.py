"""Reading the registry's events and block headers (the mirror's only chain access).

Guarantees: `logs(a, b)` returns every registry event of blocks a..b (inclusive) in chain
order (block, log index), decoded into the plain values of `domain.mirror`; a node that
refuses a range as too large ("too many results", "block range", "limit") is asked again
with halves of it, down to one block. `block(n)` gives a block's number, hash and parent
hash, what the indexer compares to detect a reorg. A node that cannot be reached raises
ChainUnavailable (client.web3_for's provider), never a transport exception. Logs of other
events of the contract (AccessControl's role events) are skipped. Decoding uses eth_abi
directly: web3's per-log event processing is the bottleneck of a full reindex otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.types import RPCEndpoint

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
from granular.errors import ChainUnavailable, GranularError

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


def _uint(topic: str) -> int:
    return int(topic, 16)


@lru_cache(maxsize=65_536)
def _checksum(hex40: str) -> str:
    return to_checksum_address("0x" + hex40)


def _address(topic: str) -> str:
    """The address in a 32-byte topic or data word (its last 20 bytes)."""
    return _checksum(topic[-40:].lower())


def _words(data: str) -> list[str]:
    """A static ABI payload as its 32-byte words, each 64 hex digits."""
    body = data[2:] if data.startswith("0x") else data
    return [body[i : i + 64] for i in range(0, len(body), 64)]


def _signature(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(i['type'] for i in entry['inputs'])})"


Decoder = Callable[[EventMeta, list[str], str], RegistryEvent]


def _decoders() -> dict[str, Decoder]:
    """Static payloads are read word by word; only SliceSplit's arrays go through eth_abi."""

    def certificate_issued(meta: EventMeta, topics: list[str], data: str) -> RegistryEvent:
        kind, quantity_wh, data_hash = _words(data)[:3]
        return CertificateIssued(
            meta=meta,
            certificate_id=_uint(topics[1]),
            owner=_address(topics[2]),
            kind=Kind(int(kind, 16)),
            quantity_wh=int(quantity_wh, 16),
            data_hash="0x" + data_hash.lower(),
        )

    def batch_issued(meta: EventMeta, topics: list[str], data: str) -> RegistryEvent:
        first, count = _words(data)[:2]
        return BatchIssued(
            meta=meta,
            batch_id=_hex(topics[1]),
            first_certificate_id=int(first, 16),
            count=int(count, 16),
        )

    def slice_split(meta: EventMeta, topics: list[str], data: str) -> RegistryEvent:
        payload = bytes.fromhex(data[2:] if data.startswith("0x") else data)
        ids, quantities, owners = abi_decode(["uint256[]", "uint64[]", "address[]"], payload)
        return SliceSplit(
            meta=meta,
            parent_slice_id=_uint(topics[1]),
            certificate_id=_uint(topics[2]),
            child_slice_ids=tuple(ids),
            quantities_wh=tuple(quantities),
            owners=tuple(_checksum(owner[2:].lower()) for owner in owners),
        )

    def slice_transferred(meta: EventMeta, topics: list[str], data: str) -> RegistryEvent:
        return SliceTransferred(
            meta=meta,
            slice_id=_uint(topics[1]),
            from_wallet=_address(topics[2]),
            to_wallet=_address(topics[3]),
        )

    def slice_claimed(meta: EventMeta, topics: list[str], data: str) -> RegistryEvent:
        production, quantity_wh = _words(data)[:2]
        return SliceClaimed(
            meta=meta,
            claim_id=_uint(topics[1]),
            production_slice_id=int(production, 16),
            consumption_slice_id=_uint(topics[2]),
            quantity_wh=int(quantity_wh, 16),
        )

    def slice_withdrawn(meta: EventMeta, topics: list[str], data: str) -> RegistryEvent:
        return SliceWithdrawn(meta=meta, slice_id=_uint(topics[1]), owner=_address(topics[2]))

    def wallet_closed(meta: EventMeta, topics: list[str], data: str) -> RegistryEvent:
        return WalletClosed(meta=meta, wallet=_address(topics[1]))

    def operator_set(meta: EventMeta, topics: list[str], data: str) -> RegistryEvent:
        return OperatorSet(
            meta=meta,
            wallet=_address(topics[1]),
            operator=_address(topics[2]),
            approved=int(_words(data)[0], 16) != 0,
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

    def _call(self, method: str, params: list[Any]) -> Any:
        """A raw JSON-RPC call: web3's result formatters cost more than the decoding."""
        response = self._w3.provider.make_request(RPCEndpoint(method), params)
        if "error" in response:
            error = response["error"]
            message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            raise _RpcError(message)
        return response.get("result")

    def head(self) -> int:
        return int(self._call("eth_blockNumber", []), 16)

    def block(self, number: int) -> BlockRef | None:
        """The block at `number` on the node's canonical chain, None above its head."""
        found = self._call("eth_getBlockByNumber", [hex(number), False])
        if found is None:
            return None
        return BlockRef(
            number=int(found["number"], 16),
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
            query = {"address": self._address, "fromBlock": hex(start), "toBlock": hex(end)}
            try:
                raw = self._call("eth_getLogs", [query])
            except ChainUnavailable:
                raise  # the node, not the range: nothing to halve
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
        """Decode eth_getLogs entries (JSON-RPC hex strings) of this registry."""
        decoded: list[RegistryEvent] = []
        for log in raw_logs:
            if log.get("removed"):
                continue
            topics = [_hex(topic) for topic in log["topics"]]
            decoder = self._by_topic.get(topics[0]) if topics else None
            if decoder is None:
                continue
            meta = EventMeta(
                block_number=_int(log["blockNumber"]),
                block_hash=_hex(log["blockHash"]),
                tx_hash=_hex(log["transactionHash"]),
                log_index=_int(log["logIndex"]),
            )
            decoded.append(decoder(meta, topics, _hex(log["data"])))
        decoded.sort(key=lambda event: (event.meta.block_number, event.meta.log_index))
        return decoded


class _RpcError(Exception):
    pass


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)
