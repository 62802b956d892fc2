"""Routes that read the chain, wired as `granular run` wires them (scheduler.stack's
registry_commands) to an RPC URL where nothing listens: a real closed port, no mock. Each
answers 503 `chain_unavailable` with Retry-After, names the RPC by scheme, host and port,
and neither the body nor the log says the URL's user info, path or query (where providers
put API keys), on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.anvil import free_port
from granular.adapters.chain.forwarder import sign_request
from granular.adapters.chain.keys import anvil_account
from granular.adapters.db import commands as commands_db
from granular.adapters.db import outbox as outbox_db
from granular.adapters.db.outbox import RequestState
from granular.domain.commands import DEFAULT_REQUEST_GAS, ForwardRequest
from granular.scheduler.stack import registry_commands
from granular.services import commands as service
from granular.services import outbox
from granular.services.deployment import ChainTarget
from tests.api.conftest import Keys

V1 = "/interface/registry/v1"
CHAIN_ID = 31337
REGISTRY = "0x" + "1" * 40
FORWARDER = "0x" + "2" * 40
OWNER = anvil_account(1)
OTHER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
ISSUER = anvil_account(0).address
# What an RPC URL of a hosted provider looks like: credentials, a key in the path and the
# query. None of these words may leave the process.
SECRETS = ("user:", "s3cr3t-password", "key123-in-path", "key456-in-query")
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


@dataclass
class Unreachable:
    client: TestClient
    rpc: str  # what the answer may name: scheme, host and port
    caplog: pytest.LogCaptureFixture


def _wire(client: TestClient, port: int) -> None:
    """The app's registry commands on 127.0.0.1:`port`, as `granular run` builds them."""
    url = f"http://user:s3cr3t-password@127.0.0.1:{port}/v3/key123-in-path?apikey=key456-in-query"
    target = ChainTarget(
        rpc_url=url,
        chain_id=CHAIN_ID,
        registry=REGISTRY,
        record={"forwarder": FORWARDER, "blockNumber": 0, "issuer": ISSUER},
        account=None,
    )
    client.app.state.registry_commands = registry_commands(target)  # type: ignore[attr-defined]


@pytest.fixture
def unreachable(client: TestClient, caplog: pytest.LogCaptureFixture) -> Iterator[Unreachable]:
    port = free_port()  # bound, then closed: nothing listens there
    _wire(client, port)
    with caplog.at_level(logging.INFO):  # what `granular run` logs (cli: basicConfig INFO)
        yield Unreachable(client, f"http://127.0.0.1:{port}", caplog)


class SilentNode:
    """A real TCP listener that accepts connections and never answers: a node that hangs."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self.port: int = self._socket.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.connections.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self.connections:
            connection.close()
        self._socket.close()


def _signed_transfer() -> dict[str, Any]:
    """A transfer signed by the slice's owner: everything checks offline, up to the
    deadline, which needs the chain's time."""
    deadline_s = int(NOW.timestamp()) + 3600
    request = ForwardRequest(
        from_address=OWNER.address,
        to=REGISTRY,
        value_wei=0,
        gas=DEFAULT_REQUEST_GAS,
        nonce=0,
        deadline_s=deadline_s,
        data=service.calldata(service.transfer(1, OTHER)),
    )
    signature = sign_request(
        chain_id=CHAIN_ID, forwarder=FORWARDER, request=request, private_key=bytes(OWNER.key)
    )
    return {
        "from": OWNER.address,
        "nonce": 0,
        "deadline": deadline_s,
        "gas": DEFAULT_REQUEST_GAS,
        "signature": "0x" + signature.hex(),
        "to": OTHER,
    }


def _confirmed_batch(sessions: sessionmaker[Session]) -> int:
    """A relayed executeBatch the outbox confirmed: its status asks the chain which of the
    requests inside ran."""
    key = "relay:batch"
    with sessions.begin() as session:
        submitted = outbox.submit(
            session=session,
            chain_id=CHAIN_ID,
            signer=ISSUER,
            idempotency_key=key,
            to=FORWARDER,
            data=b"\x01",
            items=2,
            now=NOW,
        )
        outbox_db.set_request_states(
            session=session,
            changes=[
                outbox_db.StateChange(
                    submitted.request_id,
                    RequestState.CONFIRMED,
                    "0x" + "ab" * 32,
                    7,
                    "0x" + "cd" * 32,
                )
            ],
            now=NOW,
        )
        return commands_db.add_command(
            session=session,
            chain_id=CHAIN_ID,
            kind="transfer_batch",
            signer=OWNER.address,
            nonce=0,
            nonce_count=2,
            deadline_s=None,
            relay_key=key,
            tx_keys=[key],
            summary={"commands": []},
            now=NOW,
        )


ROUTES: list[tuple[str, str, str, Any]] = [
    # (id, method, path, body); the key is chosen by the method below
    (
        "transfer-typed-data",
        "GET",
        f"/slices/1/transfer/typed-data?from={OWNER.address}&to={OTHER}",
        None,
    ),
    (
        "claim-typed-data",
        "GET",
        f"/claims/slices/typed-data?from={OWNER.address}&source=1&target=2",
        None,
    ),
    ("close-typed-data", "GET", f"/wallets/{OWNER.address}/close/typed-data", None),
    ("signed-transfer", "POST", "/slices/1/transfer", _signed_transfer()),
    (
        "issue-certificate",
        "POST",
        "/certificates",
        {
            "idempotencyKey": "k1",
            "owner": OTHER,
            "kind": "production",
            "quantityWh": 1,
            "dataHash": "0x" + "ee" * 32,
        },
    ),
    ("withdraw-certificate", "DELETE", "/certificates/1", None),
]


@pytest.mark.parametrize(
    ("method", "path", "body"), [r[1:] for r in ROUTES], ids=[r[0] for r in ROUTES]
)
def test_a_route_that_reads_an_unreachable_chain_is_503_naming_the_host_only(
    unreachable: Unreachable, keys: Keys, method: str, path: str, body: Any
) -> None:
    headers = keys.issuer if "certificates" in path else keys.buyer
    response = unreachable.client.request(method, f"{V1}{path}", json=body, headers=headers)
    _assert_unavailable(unreachable, response)


def test_the_status_of_a_relayed_batch_is_503_when_the_chain_cannot_say_what_ran(
    unreachable: Unreachable, keys: Keys, sessions: sessionmaker[Session]
) -> None:
    request_id = _confirmed_batch(sessions)
    response = unreachable.client.get(f"{V1}/requests/{request_id}", headers=keys.viewer)
    _assert_unavailable(unreachable, response)


def test_a_node_that_hangs_is_503_after_one_timeout_not_five(
    client: TestClient, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    node = SilentNode()
    try:
        _wire(client, node.port)
        with caplog.at_level(logging.INFO):
            response = client.get(
                f"{V1}/wallets/{OWNER.address}/close/typed-data", headers=keys.buyer
            )
        unreachable = Unreachable(client, f"http://127.0.0.1:{node.port}", caplog)
        _assert_unavailable(unreachable, response, reason="ReadTimeout")
        # One view call, one request on the wire: web3's own retries (five tries on a
        # timeout, eth_call included) would keep an API request waiting five timeouts.
        assert len(node.connections) == 1
    finally:
        node.close()


def test_a_route_that_needs_no_chain_still_answers(unreachable: Unreachable, keys: Keys) -> None:
    """Only what reads the chain fails: naming a wallet's typed data is off-chain."""
    response = unreachable.client.get(
        f"{V1}/wallets/{OWNER.address}/name/typed-data",
        params={"name": "Buyer"},
        headers=keys.buyer,
    )
    assert response.status_code == 200, response.text


def _assert_unavailable(
    unreachable: Unreachable, response: Any, reason: str = "ConnectionError"
) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["code"] == "chain_unavailable"
    assert error["details"]["rpc"] == unreachable.rpc
    assert error["details"]["reason"] == reason
    assert unreachable.rpc in error["message"]
    assert unreachable.rpc in unreachable.caplog.text  # a warning line names the node
    assert "Traceback" not in unreachable.caplog.text
    for secret in SECRETS:
        assert secret not in response.text
        assert secret not in unreachable.caplog.text
