"""Helpers for the outbox tests: mint requests, a sender on a test clock, driving rounds,
and the check that the chain and the database tell the same story."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.contract import Contract

from granular.adapters.chain.anvil import Anvil
from granular.adapters.chain.artifacts import Artifact
from granular.adapters.db import outbox as db
from granular.adapters.db.outbox import Request, RequestState
from granular.domain.gas import FeePolicy, Tier
from granular.services import outbox as service
from granular.services.outbox import OutboxConfig, OutboxSender, SendReport

CHAIN_ID = 31337
FAST_CONFIG = {
    "chain_id": CHAIN_ID,
    "confirmations": 1,
    "poll_interval_s": 0.01,
    "backoff_initial_s": 0.02,
    "backoff_max_s": 0.1,
    "lease_ttl_s": 30.0,
    "rpc_timeout_s": 2.0,
}


class SimulatedCrash(BaseException):
    """Raised by a fault hook: the process 'dies' at that point (nothing catches it)."""


@dataclass
class Clock:
    """A wall clock the test moves by hand (tier deadlines without sleeping)."""

    now_s: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def crash_at(point: str) -> Callable[[str], None]:
    def hook(reached: str) -> None:
        if reached == point:
            raise SimulatedCrash(point)

    return hook


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in response, response
    return response.get("result")


def batch_id(key: str) -> bytes:
    return Web3.keccak(text=f"batch:{key}")


def issue_calldata(registry: Contract, key: str, owner: str, count: int = 1) -> bytes:
    items = [(owner, 0, 1_000 + i, Web3.keccak(text=f"{key}:{i}")) for i in range(count)]
    return bytes(
        Web3.to_bytes(hexstr=registry.encode_abi("issueBatch", args=[batch_id(key), items]))
    )


_OPEN_SENDERS: list[OutboxSender] = []


@pytest.fixture(autouse=True)
def _close_senders() -> Iterator[None]:
    """Every sender a test made releases its lease after the test (import in each module)."""
    yield
    while _OPEN_SENDERS:
        _OPEN_SENDERS.pop().close()


def make_sender(
    engine: Engine,
    url: str,
    account: LocalAccount,
    *,
    clock: Callable[[], float] | None = None,
    fault: Callable[[str], None] | None = None,
    policy: FeePolicy | None = None,
    **overrides: Any,
) -> OutboxSender:
    settings = {**FAST_CONFIG, **overrides}
    if policy is not None:
        settings["fee_policy"] = policy
    sender = OutboxSender(
        engine=engine,
        rpc_url=url,
        account=account,
        config=OutboxConfig(**settings),
        clock=clock or time.time,
        fault=fault,
    )
    _OPEN_SENDERS.append(sender)
    return sender


def submit_mints(
    sessions: sessionmaker[Session],
    registry: Contract,
    signer: str,
    keys: Sequence[str],
    *,
    owner: str,
    items: int = 1,
    tier: Tier = Tier.FAST,
    gas_limit: int | None = None,
    chain_id: int = CHAIN_ID,
) -> list[int]:
    ids = []
    with sessions.begin() as session:
        for key in keys:
            submitted = service.submit(
                session=session,
                chain_id=chain_id,
                signer=signer,
                idempotency_key=key,
                to=registry.address,
                data=issue_calldata(registry, key, owner, items),
                tier=tier,
                items=items,
                gas_limit=gas_limit,
            )
            ids.append(submitted.request_id)
    return ids


def requests_of(sessions: sessionmaker[Session], chain_id: int = CHAIN_ID) -> list[Request]:
    with sessions() as session:
        return db.list_requests(session=session, chain_id=chain_id)


def states(sessions: sessionmaker[Session], chain_id: int = CHAIN_ID) -> dict[str, RequestState]:
    return {r.idempotency_key: r.state for r in requests_of(sessions, chain_id)}


def all_final(sessions: sessionmaker[Session], chain_id: int = CHAIN_ID) -> bool:
    return all(r.state in db.FINAL_STATES for r in requests_of(sessions, chain_id))


def drive(
    sender: OutboxSender,
    until: Callable[[], bool],
    *,
    rounds: int = 400,
    pause_s: float = 0.005,
) -> list[SendReport]:
    """Rounds until `until()`; anvil's automine answers before the block exists, so a short
    pause between rounds lets receipts appear. Bounded, never a timed assertion."""
    reports = []
    for _ in range(rounds):
        reports.append(sender.send_once())
        if until():
            return reports
        time.sleep(pause_s)
    raise AssertionError(f"not reached after {rounds} rounds")


def wait_for(predicate: Callable[[], bool], *, tries: int = 2_000, pause_s: float = 0.01) -> None:
    for _ in range(tries):
        if predicate():
            return
        time.sleep(pause_s)
    raise AssertionError("condition not reached")


def mint_count(registry: Contract) -> int:
    """Certificates issued so far (ids start at 1 and are never reused)."""
    next_id: int = registry.functions.nextId().call()
    return next_id - 1


def assert_chain_agrees(
    w3: Web3,
    registry: Contract,
    sessions: sessionmaker[Session],
    *,
    signer: str,
    chain_id: int = CHAIN_ID,
    mints_before: int = 0,
) -> None:
    """Each confirmed request is the mined transaction at its nonce, exactly once; nothing
    else of ours is on chain; the registry holds exactly the confirmed batches."""
    requests_ = requests_of(sessions, chain_id)
    nonces = [r.nonce for r in requests_ if r.nonce is not None]
    assert len(nonces) == len(set(nonces)), "two requests share a nonce"
    minted = 0
    for request in requests_:
        hashes = [a.tx_hash for a in request.attempts]
        assert len(hashes) == len(set(hashes))
        assert all(a.nonce == request.nonce for a in request.attempts), "payload moved nonce"
        on_chain = [h for h in hashes if _receipt_or_none(w3.eth, h) is not None]
        if request.state is RequestState.CONFIRMED:
            assert on_chain == [request.tx_hash], (request.idempotency_key, on_chain)
            receipt = w3.eth.get_transaction_receipt(request.tx_hash)  # type: ignore[arg-type]
            assert receipt["status"] == 1
            assert receipt["blockNumber"] == request.block_number
            assert receipt["blockHash"].to_0x_hex() == request.block_hash
            tx = w3.eth.get_transaction(request.tx_hash)  # type: ignore[arg-type]
            assert tx["nonce"] == request.nonce
            assert tx["from"] == signer
            assert tx["to"] == request.to_address
            assert bytes(tx["input"]) == request.data
            _assert_signed_as_stored(tx, request)
            assert registry.functions.isBatchIssued(batch_id(request.idempotency_key)).call()
            minted += request.items or 0
        elif request.state is RequestState.REVERTED:
            assert on_chain == [request.tx_hash]
            assert w3.eth.get_transaction_receipt(request.tx_hash)["status"] == 0  # type: ignore[arg-type]
            assert request.error_code
        else:
            assert on_chain == [], (request.idempotency_key, request.state, on_chain)
    assert mint_count(registry) - mints_before == minted


def _assert_signed_as_stored(tx: Any, request: Request) -> None:
    """The mined transaction carries the gas and fees stored on its attempt (what the logs
    and the +12.5 % checks read), not other values."""
    (mined,) = [a for a in request.attempts if a.tx_hash == request.tx_hash]
    assert tx["gas"] == mined.gas_limit
    if mined.fee_kind == "legacy":
        assert tx["type"] == 0 and tx["gasPrice"] == mined.gas_price_wei
    else:
        assert tx["type"] == 2
        assert tx["maxFeePerGas"] == mined.max_fee_per_gas_wei
        assert tx["maxPriorityFeePerGas"] == mined.max_priority_fee_per_gas_wei


def _receipt_or_none(eth: Any, tx_hash: str) -> Any:
    try:
        return eth.get_transaction_receipt(tx_hash)
    except Exception:
        return None


def registry_at(w3: Web3, address: str) -> Contract:
    return w3.eth.contract(address=address, abi=Artifact.load("CertificateRegistry").abi)


@contextmanager
def automine_off(w3: Web3) -> Iterator[None]:
    rpc(w3, "evm_setAutomine", False)
    try:
        yield
    finally:
        rpc(w3, "evm_setAutomine", True)


def own_anvil(tmp_path: Path, *args: str, port: int | None = None) -> Anvil:
    return Anvil(args=args, port=port, log=tmp_path / "anvil.log")


class FaultyRpc:
    """A JSON-RPC proxy in front of a real node that, while `failing` names a method,
    answers that method with a node error instead of forwarding it (single and batch calls).

    The error is what a node without the block's state says ("header not found"): the
    node answered, and could not run the call.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.failing: set[str] = set()
        self.failed: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                calls = body if isinstance(body, list) else [body]
                forward = [c for c in calls if c.get("method") not in proxy.failing]
                answers: dict[Any, Any] = {}
                if forward:
                    got = requests.post(proxy.upstream, json=forward, timeout=10).json()
                    answers = {a["id"]: a for a in (got if isinstance(got, list) else [got])}
                out = []
                for call in calls:
                    if call.get("method") in proxy.failing:
                        proxy.failed.append(call["method"])
                        error = {"code": -32000, "message": "header not found"}
                        out.append({"jsonrpc": "2.0", "id": call.get("id"), "error": error})
                    else:
                        out.append(answers[call.get("id")])
                data = json.dumps(out if isinstance(body, list) else out[0]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyRpc:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
