"""The outbox's node client: raw JSON-RPC, what a node's refusal means, local signing.

- `Rpc` speaks JSON-RPC over HTTP, hex in and hex out, and never retries (the sender backs
  off itself). A transport failure raises ChainUnavailable; a node's error answer comes back
  as an `RpcError` value from `answer`/`batch`, and as ChainUnavailable from `call`.
- `classify_broadcast_error` reads a refusal of eth_sendRawTransaction (geth, Nethermind,
  OpenEthereum, Erigon, anvil).
- `TxSigner` signs locally; the key never leaves it and is never logged.
- `describe_revert` turns revert data into the contract's custom error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_keys.datatypes import PrivateKey
from eth_utils.address import to_checksum_address
from web3 import HTTPProvider
from web3.types import RPCEndpoint

from granular.adapters.chain.artifacts import Artifact, ErrorDecoder
from granular.adapters.chain.client import ChainUnavailable
from granular.domain.gas import Eip1559Fees, Fees

_BATCH_CHUNK = 200  # JSON-RPC calls per HTTP batch


@dataclass(frozen=True, slots=True)
class RpcError:
    """A JSON-RPC error answer (the node answered, and said no)."""

    method: str
    code: int
    message: str
    data: Any = None

    def revert_data(self) -> bytes | None:
        """The revert bytes a node put in `data` (a hex string, or inside a message)."""
        raw = self.data
        if isinstance(raw, dict):
            raw = raw.get("data")
        if not isinstance(raw, str):
            return None
        start = raw.find("0x")
        if start < 0:
            return None
        hex_part = raw[start + 2 :].split()[0] if raw[start + 2 :] else ""
        try:
            return bytes.fromhex(hex_part)
        except ValueError:
            return None

    @property
    def is_revert(self) -> bool:
        """geth and anvil say so in the code or message; OpenEthereum only in `data`
        ("VM execution error." with data "Reverted 0x...")."""
        return (
            self.code == 3 or "revert" in self.message.lower() or "revert" in str(self.data).lower()
        )

    @property
    def is_execution_error(self) -> bool:
        """The call ran and failed (a revert, out of gas, a bad opcode), as opposed to a
        node that could not run it (no state for that block, a limit, an internal error)."""
        text = f"{self.message} {self.data}".lower()
        return self.is_revert or any(s in text for s in _EXECUTION_FAILURES)


_EXECUTION_FAILURES = (
    "out of gas",
    "outofgas",
    "invalid opcode",
    "invalidfeopcode",
    "bad instruction",
    "stack underflow",
    "stack overflow",
    "vm exception",
    "execution",  # "VM execution error", "The execution failed due to an exception"
    "evm error",
)

Answer = Any  # a JSON-RPC result, or an RpcError


class Rpc:
    """Raw JSON-RPC over HTTP: hex in, hex out, no retries (the sender backs off itself)."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.url = url
        self._provider = HTTPProvider(
            url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None
        )

    def _transport(self, send: Callable[[], Any]) -> Any:
        try:
            return send()
        except (requests.RequestException, OSError, ValueError) as error:
            raise ChainUnavailable(self.url, type(error).__name__) from None

    def answer(self, method: str, params: Sequence[Any]) -> Answer:
        response = self._transport(
            lambda: self._provider.make_request(RPCEndpoint(method), list(params))
        )
        return _unwrap(method, response)

    def call(self, method: str, params: Sequence[Any]) -> Any:
        """The result; a JSON-RPC error here means the node cannot serve us: unavailable."""
        result = self.answer(method, params)
        if isinstance(result, RpcError):
            raise ChainUnavailable(self.url, f"{method}: {result.message}")
        return result

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Answer]:
        """One answer per call, in order; a node without batch support is asked one by one."""
        answers: list[Answer] = []
        for start in range(0, len(calls), _BATCH_CHUNK):
            chunk = calls[start : start + _BATCH_CHUNK]
            encoded = [(RPCEndpoint(m), list(p)) for m, p in chunk]

            def send(encoded: list[tuple[RPCEndpoint, list[Any]]] = encoded) -> Any:
                return self._provider.make_batch_request(encoded)

            response = self._transport(send)
            if isinstance(response, list) and len(response) == len(chunk):
                answers.extend(
                    _unwrap(method, one) for (method, _), one in zip(chunk, response, strict=True)
                )
            else:
                answers.extend(self.answer(method, params) for method, params in chunk)
        return answers

    def int_call(self, method: str, params: Sequence[Any]) -> int:
        """`call` for a quantity (a hex string)."""
        return hex_int(self.call(method, params))


def _unwrap(method: str, response: Mapping[str, Any]) -> Answer:
    error = response.get("error")
    if error is not None:
        if isinstance(error, Mapping):
            return RpcError(
                method, int(error.get("code", 0)), str(error.get("message", "")), error.get("data")
            )
        return RpcError(method, 0, str(error))
    return response.get("result")


def hex_int(value: Any) -> int:
    """A JSON-RPC quantity ("0x..." or an int) as an int."""
    return int(value, 16) if isinstance(value, str) else int(value)


# --- broadcast errors ---------------------------------------------------------------------


class BroadcastResult(StrEnum):
    ACCEPTED = "accepted"
    KNOWN = "known"  # the node has this very transaction already
    NONCE_USED = "nonce_used"  # a transaction with this nonce is mined: ours, or foreign
    # The fee is too low: another transaction with this nonce pays more, or the fee is under
    # the pool's minimum or the base fee. Counted as sent so that the tier's deadline runs
    # and the attempt is replaced with higher fees; refused, it would wait forever.
    UNDERPRICED = "underpriced"
    REJECTED = "rejected"  # anything else: funds, gas, malformed; kept, retried, alerted


_KNOWN = ("already known", "already imported", "alreadyknown", "known transaction")
_NONCE_USED = ("nonce too low", "nonce is too low", "oldnonce", "nonce has already been used")
_UNDERPRICED = (
    "underpriced",
    "too low to replace",
    "fee too low",
    "feetoolow",  # Nethermind: FeeTooLow, FeeTooLowToCompete
    "less than block base fee",  # anvil, reth: max fee per gas less than block base fee
    "gas price is too low",  # OpenEthereum: below the node's minimal gas price
)


def classify_broadcast_error(message: str) -> BroadcastResult:
    """What a node's refusal of eth_sendRawTransaction means for the outbox.

    Messages of geth, Nethermind, OpenEthereum (Energy Web Chain), Erigon and anvil.
    """
    text = message.lower()
    if any(s in text for s in _KNOWN) or "same hash was already" in text:
        return BroadcastResult.KNOWN
    if any(s in text for s in _NONCE_USED):
        return BroadcastResult.NONCE_USED
    if any(s in text for s in _UNDERPRICED):
        return BroadcastResult.UNDERPRICED
    return BroadcastResult.REJECTED


def counts_as_sent(result: BroadcastResult) -> bool:
    return result is not BroadcastResult.REJECTED


# --- signing and reverts ------------------------------------------------------------------


class TxSigner:
    """Signs transactions with one local key; `address` is its EIP-55 spelling."""

    def __init__(self, account: LocalAccount) -> None:
        self.address: str = to_checksum_address(account.address)
        self._key = PrivateKey(bytes(account.key))

    def __repr__(self) -> str:
        return f"TxSigner({self.address})"  # never the key

    def sign(
        self, *, chain_id: int, nonce: int, to: str, data: bytes, gas: int, fees: Fees
    ) -> tuple[bytes, str]:
        """The raw signed transaction and its hash ("0x..."); value 0."""
        tx: dict[str, Any] = {
            "chainId": chain_id,
            "nonce": nonce,
            "to": to_checksum_address(to),
            "value": 0,
            "data": data,
            "gas": gas,
            **fees.to_tx_params(),
        }
        if isinstance(fees, Eip1559Fees):
            tx["type"] = 2
        signed = Account.sign_transaction(tx, self._key)
        return bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()


def default_decoder() -> ErrorDecoder:
    """Custom errors of the registry and the forwarder, from the committed artifacts."""
    return ErrorDecoder(
        Artifact.load("CertificateRegistry").abi + Artifact.load("GranularForwarder").abi
    )


def describe_revert(error: RpcError, decoder: ErrorDecoder) -> tuple[str, str]:
    """(error code, detail) of a revert answer: the custom error's name and its values."""
    data = error.revert_data()
    if data is not None and len(data) >= 4:
        decoded = decoder.decode(data)
        if decoded is not None:
            return decoded.name, str(decoded)
        return "reverted", f"{error.message} (data 0x{data.hex()})"
    return "reverted", error.message
