"""Relayed registry commands: EIP-712 ForwardRequests for the GranularForwarder, the registry
calldata they carry, and the registry's views a command is checked against.

Guarantees:
- `typed_data` is exactly what the OpenZeppelin 5.1 ERC2771Forwarder (name
  "GranularForwarder", version "1") hashes, so a signature the wallet owner makes over it is
  the one the forwarder recovers; `recover_signer` recovers the same address off-chain.
- `execute_calldata` / `execute_batch_calldata` relay signed requests unchanged: the signer
  stays the `_msgSender()` the registry sees.
- `ChainRegistryView` only calls views (`sliceOf`, `walletOf`, `isOperator`, `nonces`,
  `hasRole`); it never sends anything. A node it cannot reach, or that refuses to serve a
  view (a rate limit, no state), raises ChainUnavailable naming the RPC host only: never a
  web3 or requests exception, whose text would repeat the URL and its API key.

web3 and eth_account are used here and nowhere above adapters/chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import Web3RPCError
from web3.logs import DISCARD

from granular.adapters.chain.artifacts import Artifact
from granular.adapters.chain.client import answering, web3_for
from granular.domain.commands import ForwardRequest, SignatureUnreadable
from granular.domain.slices import Kind, Slice, SliceState
from granular.errors import ChainUnavailable

FORWARDER_NAME = "GranularForwarder"
FORWARDER_VERSION = "1"
ISSUER_ROLE = keccak(text="ISSUER_ROLE")

EIP712_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
FORWARD_REQUEST_TYPE = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "gas", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint48"},
    {"name": "data", "type": "bytes"},
]


@cache
def _registry_abi() -> list[dict[str, Any]]:
    return Artifact.load("CertificateRegistry").abi


@cache
def _forwarder_abi() -> list[dict[str, Any]]:
    return Artifact.load("GranularForwarder").abi


@cache
def _offline() -> Web3:
    return Web3()


def _registry_encoder() -> type[Contract]:
    return _offline().eth.contract(abi=_registry_abi())


def _forwarder_encoder() -> type[Contract]:
    return _offline().eth.contract(abi=_forwarder_abi())


# ------------------------------------------------------------------ EIP-712


def eip712_domain(*, chain_id: int, forwarder: str) -> dict[str, Any]:
    return {
        "name": FORWARDER_NAME,
        "version": FORWARDER_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(forwarder),
    }


def _message(request: ForwardRequest) -> dict[str, Any]:
    return {
        "from": request.from_address,
        "to": request.to,
        "value": request.value_wei,
        "gas": request.gas,
        "nonce": request.nonce,
        "deadline": request.deadline_s,
        "data": request.data,
    }


def typed_data(*, chain_id: int, forwarder: str, request: ForwardRequest) -> dict[str, Any]:
    """The full EIP-712 document to sign (eth_signTypedData_v4 form); bytes as 0x-hex."""
    message = _message(request)
    message["data"] = "0x" + request.data.hex()
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "ForwardRequest": FORWARD_REQUEST_TYPE},
        "primaryType": "ForwardRequest",
        "domain": eip712_domain(chain_id=chain_id, forwarder=forwarder),
        "message": message,
    }


def _signable(chain_id: int, forwarder: str, request: ForwardRequest) -> Any:
    return encode_typed_data(
        eip712_domain(chain_id=chain_id, forwarder=forwarder),
        {"ForwardRequest": FORWARD_REQUEST_TYPE},
        _message(request),
    )


def request_digest(*, chain_id: int, forwarder: str, request: ForwardRequest) -> bytes:
    """The EIP-712 hash the signature covers: one signed request, one digest."""
    signable = _signable(chain_id, forwarder, request)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def recover_signer(
    *, chain_id: int, forwarder: str, request: ForwardRequest, signature: bytes
) -> str:
    """Who signed `request` (checksummed): whom the forwarder will see as the signer."""
    try:
        recovered: str = Account.recover_message(
            _signable(chain_id, forwarder, request), signature=signature
        )
    except Exception as error:  # eth_keys raises several types for a malformed signature
        raise SignatureUnreadable(type(error).__name__) from None
    return to_checksum_address(recovered)


def sign_request(
    *, chain_id: int, forwarder: str, request: ForwardRequest, private_key: bytes
) -> bytes:
    """Sign as a wallet owner would (tests, scripts and examples)."""
    signed = Account.sign_typed_data(
        private_key,
        eip712_domain(chain_id=chain_id, forwarder=forwarder),
        {"ForwardRequest": FORWARD_REQUEST_TYPE},
        _message(request),
    )
    return bytes(signed.signature)


def _request_data(request: ForwardRequest, signature: bytes) -> tuple[Any, ...]:
    """ForwardRequestData(from, to, value, gas, deadline, data, signature): no nonce."""
    return (
        request.from_address,
        request.to,
        request.value_wei,
        request.gas,
        request.deadline_s,
        request.data,
        signature,
    )


def execute_calldata(request: ForwardRequest, signature: bytes) -> bytes:
    encoded = _forwarder_encoder().encode_abi("execute", args=[_request_data(request, signature)])
    return bytes(Web3.to_bytes(hexstr=encoded))


def execute_batch_calldata(signed: list[tuple[ForwardRequest, bytes]]) -> bytes:
    """executeBatch with no refund receiver (atomic: an invalid signature or deadline reverts
    the whole batch; an inner call that fails does not, so each entry is checked first)."""
    requests = [_request_data(request, signature) for request, signature in signed]
    encoded = _forwarder_encoder().encode_abi("executeBatch", args=[requests, "0x" + "0" * 40])
    return bytes(Web3.to_bytes(hexstr=encoded))


# ------------------------------------------------------------------ registry calldata


def registry_calldata(function: str, *args: Any) -> bytes:
    """ABI-encoded call of a registry function (names and argument order of DESIGN §5)."""
    encoded = _registry_encoder().encode_abi(function, args=list(args))
    return bytes(Web3.to_bytes(hexstr=encoded))


# ------------------------------------------------------------------ views

VIEW_TIMEOUT_S = 5.0  # an API request waits this long for the node, once, then answers 503

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _on_chain(
    method: Callable[Concatenate[ChainRegistryView, _P], _R],
) -> Callable[Concatenate[ChainRegistryView, _P], _R]:
    """The view's chain calls, with every way the node can fail as ChainUnavailable."""

    @wraps(method)
    def guarded(self: ChainRegistryView, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._node():
            return method(self, *args, **kwargs)

    return guarded


@dataclass
class ChainRegistryView:
    """The read port of granular.domain.commands.RegistryView, on the contract's views.

    The mirror's tables replace it once the indexer exists; both answer the same questions.
    """

    w3: Web3
    registry_address: str
    forwarder_address: str
    deployment_block: int = 0  # where the registry's logs start (the deployment record's)

    @classmethod
    def on(
        cls,
        rpc_url: str,
        *,
        registry: str,
        forwarder: str,
        deployment_block: int = 0,
        timeout_s: float = VIEW_TIMEOUT_S,
    ) -> ChainRegistryView:
        """A view on `rpc_url` for callers that answer someone now (the API): nothing is
        asked at construction, and a node that does not answer fails a call within one
        `timeout_s`, without web3's retries."""
        w3 = web3_for(rpc_url, timeout_s=timeout_s, retry=False)
        return cls(w3, registry, forwarder, deployment_block=deployment_block)

    @contextmanager
    def _node(self) -> Iterator[None]:
        url = str(getattr(self.w3.provider, "endpoint_uri", None) or "?")
        try:
            with answering(url):
                yield
        except Web3RPCError as error:  # the node answered that it will not serve the view
            raise ChainUnavailable(url, f"the node refused: {_node_message(error)}") from None

    def __post_init__(self) -> None:
        self._registry = self.w3.eth.contract(
            address=to_checksum_address(self.registry_address), abi=_registry_abi()
        )
        self._forwarder = self.w3.eth.contract(
            address=to_checksum_address(self.forwarder_address), abi=_forwarder_abi()
        )

    @_on_chain
    def slice(self, slice_id: int) -> Slice | None:
        owner, kind, state, quantity_wh, certificate_id = self._registry.functions.sliceOf(
            slice_id
        ).call()
        if SliceState(state) == SliceState.NONE:
            return None
        return Slice(
            slice_id,
            to_checksum_address(owner),
            Kind(kind),
            SliceState(state),
            int(quantity_wh),
            int(certificate_id),
        )

    @_on_chain
    def wallet(self, wallet: str) -> tuple[bool, int]:
        """(closed, number of Active slices)."""
        closed, active = self._registry.functions.walletOf(to_checksum_address(wallet)).call()
        return bool(closed), int(active)

    @_on_chain
    def is_operator(self, wallet: str, operator: str) -> bool:
        approved: bool = self._registry.functions.isOperator(
            to_checksum_address(wallet), to_checksum_address(operator)
        ).call()
        return approved

    @_on_chain
    def is_issuer(self, account: str) -> bool:
        granted: bool = self._registry.functions.hasRole(
            ISSUER_ROLE, to_checksum_address(account)
        ).call()
        return granted

    @_on_chain
    def children(self, slice_id: int) -> list[int]:
        """The child slices of a Removed slice, from its SliceSplit event (parent indexed)."""
        event = self._registry.events.SliceSplit()
        logs = event.get_logs(
            from_block=self.deployment_block, argument_filters={"parentSliceId": slice_id}
        )
        return [int(child) for log in logs for child in log["args"]["childSliceIds"]]

    @_on_chain
    def forwarder_nonce(self, account: str) -> int:
        nonce: int = self._forwarder.functions.nonces(to_checksum_address(account)).call()
        return nonce

    @_on_chain
    def forwarded(self, tx_hash: str) -> list[bool]:
        """Whether each request a mined relay transaction carried ran (ExecutedForwardRequest
        `success`): executeBatch mines even when a call inside it fails."""
        receipt = self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        executed = self._forwarder.events.ExecutedForwardRequest().process_receipt(
            receipt, errors=DISCARD
        )
        return [bool(event["args"]["success"]) for event in executed]

    @_on_chain
    def chain_time_s(self) -> int:
        """The latest block's timestamp: what the forwarder compares deadlines with."""
        timestamp: int = self.w3.eth.get_block("latest")["timestamp"]
        return timestamp


def _node_message(error: Web3RPCError) -> str:
    """The node's own error message (a rate limit, "header not found"), at most 200
    characters; web3's rendering of the error is not used, it may quote the request."""
    response = error.rpc_response or {}
    found = response.get("error")
    message = found.get("message") if isinstance(found, dict) else found
    return str(message or "no message")[:200]


# ------------------------------------------------------------------ wallet names (off-chain)

NAMES_DOMAIN_NAME = "Granular"
NAMES_DOMAIN_VERSION = "1"
WALLET_NAME_TYPE = [
    {"name": "wallet", "type": "address"},
    {"name": "name", "type": "string"},
    {"name": "revision", "type": "uint256"},
    {"name": "deadline", "type": "uint48"},
]


def names_domain(*, chain_id: int, registry: str) -> dict[str, Any]:
    return {
        "name": NAMES_DOMAIN_NAME,
        "version": NAMES_DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(registry),
    }


def _name_message(wallet: str, name: str, revision: int, deadline_s: int) -> dict[str, Any]:
    return {"wallet": wallet, "name": name, "revision": revision, "deadline": deadline_s}


def wallet_name_typed_data(
    *, chain_id: int, registry: str, wallet: str, name: str, revision: int, deadline_s: int
) -> dict[str, Any]:
    """What a wallet owner signs to give its address a name (kept off-chain, by revision)."""
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "WalletName": WALLET_NAME_TYPE},
        "primaryType": "WalletName",
        "domain": names_domain(chain_id=chain_id, registry=registry),
        "message": _name_message(wallet, name, revision, deadline_s),
    }


def recover_wallet_name_signer(
    *,
    chain_id: int,
    registry: str,
    wallet: str,
    name: str,
    revision: int,
    deadline_s: int,
    signature: bytes,
) -> str:
    signable = encode_typed_data(
        names_domain(chain_id=chain_id, registry=registry),
        {"WalletName": WALLET_NAME_TYPE},
        _name_message(wallet, name, revision, deadline_s),
    )
    try:
        recovered: str = Account.recover_message(signable, signature=signature)
    except Exception as error:  # eth_keys raises several types for a malformed signature
        raise SignatureUnreadable(type(error).__name__) from None
    return to_checksum_address(recovered)


def sign_wallet_name(
    *,
    chain_id: int,
    registry: str,
    wallet: str,
    name: str,
    revision: int,
    deadline_s: int,
    private_key: bytes,
) -> bytes:
    signed = Account.sign_typed_data(
        private_key,
        names_domain(chain_id=chain_id, registry=registry),
        {"WalletName": WALLET_NAME_TYPE},
        _name_message(wallet, name, revision, deadline_s),
    )
    return bytes(signed.signature)
