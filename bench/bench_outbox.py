"""Throughput of the transaction outbox (issue 4) on anvil with automine, SQLite (WAL).

- requests confirmed per second from one key, one single-certificate issueBatch per request,
  from the first round to the last confirmation (gas estimated, nonces allocated, signed,
  stored, committed, broadcast, receipts polled, confirmed at depth 1): target >= 200 tx/s;
- certificates confirmed per second through batched issueBatch requests: target >= 1,000/s.

Signing speed depends on the secp256k1 backend of eth-keys: coincurve when installed, else a
pure-Python one about ten times slower; the figures name the backend.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from eth_keys.backends import get_backend
from sqlalchemy import Engine
from web3 import Web3

from granular.adapters.chain.anvil import Anvil
from granular.adapters.chain.artifacts import Artifact
from granular.adapters.chain.client import connect
from granular.adapters.chain.keys import anvil_account
from granular.adapters.db.engine import make_engine, session_factory
from granular.adapters.db.migrate import upgrade
from granular.adapters.db.outbox import RequestState
from granular.domain.gas import Tier
from granular.services import outbox as service
from granular.services.deployment import deploy
from granular.services.outbox import OutboxConfig, OutboxSender

CHAIN_ID = 31337
REQUESTS = 1_000
CERT_BATCHES = 20
CERTS_PER_BATCH = 250  # ~7.5 M gas, under the 16.7 M per-transaction cap
TARGET_TX_PER_S = 200
TARGET_CERTS_PER_S = 1_000


# Anvil's automine takes the ready transactions that fit in one block when a transaction
# arrives; ready ones left over after a full block wait for the next arrival. A block gas limit
# that holds a whole round of certificate batches keeps the measure about the outbox.
BLOCK_GAS_LIMIT = 400_000_000


def run() -> dict[str, Any]:
    anvil = Anvil(args=("--gas-limit", str(BLOCK_GAS_LIMIT)))
    with tempfile.TemporaryDirectory() as tmp, anvil as node:
        record = deploy(rpc_url=node.url, network="bench", directory=Path(tmp))
        w3, _ = connect(node.url)
        registry = w3.eth.contract(
            address=record["address"], abi=Artifact.load("CertificateRegistry").abi
        )
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        upgrade(engine)
        try:
            requests = _through_outbox(engine, node.url, registry, "req", REQUESTS, 1)
            certificates = _through_outbox(
                engine, node.url, registry, "cert", CERT_BATCHES, CERTS_PER_BATCH
            )
        finally:
            engine.dispose()
    tx_per_s = requests["confirmed"] / requests["seconds"]
    certs_per_s = certificates["confirmed"] * CERTS_PER_BATCH / certificates["seconds"]
    figures = {
        "signing_backend": type(get_backend()).__name__,
        "requests": REQUESTS,
        "requests_seconds": round(requests["seconds"], 3),
        "requests_rounds": requests["rounds"],
        "submit_requests_per_s": round(REQUESTS / requests["submit_seconds"]),
        "requests_confirmed_per_s": round(tx_per_s, 1),
        "target_requests_confirmed_per_s": TARGET_TX_PER_S,
        "requests_target_met": tx_per_s >= TARGET_TX_PER_S,
        "certificate_batches": CERT_BATCHES,
        "certificates_per_batch": CERTS_PER_BATCH,
        "certificates_seconds": round(certificates["seconds"], 3),
        "certificates_confirmed_per_s": round(certs_per_s, 1),
        "target_certificates_confirmed_per_s": TARGET_CERTS_PER_S,
        "certificates_target_met": certs_per_s >= TARGET_CERTS_PER_S,
    }
    return figures


def _through_outbox(
    engine: Engine, url: str, registry: Any, prefix: str, count: int, items: int
) -> dict[str, Any]:
    sessions = session_factory(engine)
    issuer = anvil_account(0)
    owner = anvil_account(1).address
    started = time.perf_counter()
    with sessions.begin() as session:
        for i in range(count):
            key = f"{prefix}-{i}"
            batch = [(owner, 0, 1_000, os.urandom(32)) for _ in range(items)]
            data = registry.encode_abi("issueBatch", args=[Web3.keccak(text=key), batch])
            service.submit(
                session=session,
                chain_id=CHAIN_ID,
                signer=issuer.address,
                idempotency_key=key,
                to=registry.address,
                data=bytes(Web3.to_bytes(hexstr=data)),
                tier=Tier.FAST,
                items=items,
            )
    submitted = time.perf_counter()
    sender = OutboxSender(
        engine=engine,
        rpc_url=url,
        account=issuer,
        config=OutboxConfig(chain_id=CHAIN_ID, confirmations=1, batch_size=200),
    )
    confirmed = rounds = 0
    try:
        while confirmed < count:
            report = sender.send_once()
            rounds += 1
            for outcome in report.finished:
                if outcome.state is not RequestState.CONFIRMED:
                    raise AssertionError(f"{outcome.idempotency_key}: {outcome.state}")
                confirmed += 1
            if rounds > 50 * count:
                raise AssertionError(f"only {confirmed} of {count} confirmed")
    finally:
        sender.close()
    return {
        "confirmed": confirmed,
        "seconds": time.perf_counter() - submitted,
        "submit_seconds": submitted - started,
        "rounds": rounds,
    }
