"""Relayed registry commands (issue 8 §4) on anvil: the gas a relayed transfer costs over a
direct one, per transfer in a relayed list (forwarder executeBatch), and how long the API
takes to check and accept one signed transfer (signature, nonce, the registry's rules over
the chain's views, the outbox row) on SQLite. Figures, not timed assertions."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from granular.adapters.chain.anvil import Anvil
from granular.adapters.chain.artifacts import Artifact
from granular.adapters.chain.client import connect
from granular.adapters.chain.forwarder import (
    ChainRegistryView,
    execute_batch_calldata,
    execute_calldata,
    sign_request,
)
from granular.adapters.chain.keys import anvil_account
from granular.adapters.db.engine import make_engine, session_factory
from granular.adapters.db.migrate import upgrade
from granular.api.app import create_app
from granular.domain.commands import ForwardRequest
from granular.services.accounts import create_api_key
from granular.services.commands import RegistryCommands, calldata, transfer
from granular.services.deployment import deploy

REQUEST_GAS = 150_000
ACCEPTED = 50  # signed transfers posted to the API


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, Anvil(args=("--gas-limit", "60000000")) as node:
        record = deploy(rpc_url=node.url, network="bench", directory=Path(tmp))
        w3, chain_id = connect(node.url)
        registry = w3.eth.contract(
            address=record["address"], abi=Artifact.load("CertificateRegistry").abi
        )
        forwarder = record["forwarder"]
        issuer, owner, other = anvil_account(0), anvil_account(1), anvil_account(2)

        def mined_gas(tx: dict[str, Any]) -> int:
            receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction(tx))  # type: ignore[arg-type]
            assert receipt["status"] == 1, receipt
            return int(receipt["gasUsed"])

        def issue(count: int) -> list[int]:
            first: int = registry.functions.nextId().call()
            items = [(owner.address, 0, 1000, os.urandom(32)) for _ in range(count)]
            call = registry.functions.issueBatch(os.urandom(32), items)
            w3.eth.wait_for_transaction_receipt(call.transact({"from": issuer.address}))
            return list(range(first, first + count))

        def signed(slice_id: int, nonce: int) -> tuple[ForwardRequest, bytes]:
            request = ForwardRequest(
                owner.address,
                registry.address,
                0,
                REQUEST_GAS,
                nonce,
                w3.eth.get_block("latest")["timestamp"] + 3600,
                calldata(transfer(slice_id, other.address)),
            )
            signature = sign_request(
                chain_id=chain_id, forwarder=forwarder, request=request, private_key=owner.key
            )
            return request, signature

        ids = issue(1 + 1 + 10 + 50)
        direct = mined_gas(
            {
                "from": owner.address,
                "to": registry.address,
                "data": calldata(transfer(ids[0], other.address)),
            }
        )
        relayed = mined_gas(
            {"from": issuer.address, "to": forwarder, "data": execute_calldata(*signed(ids[1], 0))}
        )
        per_transfer: dict[str, int] = {}
        nonce, cursor = 1, 2
        for size in (10, 50):
            batch = [signed(ids[cursor + i], nonce + i) for i in range(size)]
            gas = mined_gas(
                {"from": issuer.address, "to": forwarder, "data": execute_batch_calldata(batch)}
            )
            per_transfer[str(size)] = round(gas / size)
            nonce, cursor = nonce + size, cursor + size

        acceptance = _acceptance(w3, chain_id, registry.address, forwarder, Path(tmp), issue)
        return {
            "gas": {
                "direct transfer": direct,
                "relayed transfer (execute)": relayed,
                "relay overhead": relayed - direct,
                "per transfer in executeBatch": per_transfer,
            },
            "api accept signed transfer (SQLite, anvil views)": acceptance,
        }


def _acceptance(
    w3: Any, chain_id: int, registry: str, forwarder: str, tmp: Path, issue: Any
) -> dict[str, float]:
    engine = make_engine(f"sqlite:///{tmp / 'bench.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    key = create_api_key(
        sessions=sessions, organization="Platform", role="buyer", label=None, now=now
    )
    view = ChainRegistryView(w3, registry, forwarder)
    app = create_app(sessions=sessions)
    app.state.registry_commands = RegistryCommands(
        chain_id=chain_id,
        registry=registry,
        forwarder=forwarder,
        relayer=anvil_account(0).address,
        view=view,
        relay_view=view,
        certificates=view,
    )
    owner, other = anvil_account(1), anvil_account(2)
    ids = issue(ACCEPTED)
    first_nonce = view.forwarder_nonce(owner.address)
    deadline = view.chain_time_s() + 3600
    timings_ms = []
    with TestClient(app) as client:
        client.headers.update({"Authorization": f"Bearer {key.key}"})
        for i, slice_id in enumerate(ids):
            request = ForwardRequest(
                owner.address,
                registry,
                0,
                REQUEST_GAS,
                first_nonce + i,
                deadline,
                calldata(transfer(slice_id, other.address)),
            )
            signature = sign_request(
                chain_id=chain_id, forwarder=forwarder, request=request, private_key=owner.key
            )
            body = {
                "from": owner.address,
                "nonce": request.nonce,
                "deadline": deadline,
                "gas": REQUEST_GAS,
                "signature": "0x" + signature.hex(),
                "to": other.address,
            }
            started = time.perf_counter()
            response = client.post(f"/interface/registry/v1/slices/{slice_id}/transfer", json=body)
            timings_ms.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 202, response.text
    engine.dispose()
    timings_ms.sort()
    return {
        "requests": len(timings_ms),
        "p50_ms": round(statistics.median(timings_ms), 1),
        "p95_ms": round(timings_ms[int(len(timings_ms) * 0.95) - 1], 1),
    }
