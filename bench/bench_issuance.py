"""Issuance end to end (issue 7 §6): 1,000 devices x 24 hourly windows (24,000 certificates)
from reads in the database to certificates confirmed on anvil, on SQLite and PostgreSQL.

Measured from the first `plan` to the last `settle`: planning (windows, items, headers,
batches of 100 in the outbox), the outbox sender (estimate, sign, broadcast, confirm at
depth 1) and settlement (receipts, certificate ids, volumes). Targets: >= 1,000
certificates/s and <= 300 MiB peak RSS. Each backend runs in a fresh process, so its peak
RSS is its own. The setup (devices, reads stored straight through the read adapters, one
reservation) is not timed.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from granular.adapters.chain.anvil import Anvil
from granular.adapters.chain.keys import anvil_account
from granular.adapters.db import issuance as idb
from granular.adapters.db.engine import make_engine, session_factory
from granular.adapters.db.migrate import upgrade
from granular.adapters.db.readings import add_reads_and_intervals, add_submission
from granular.domain.energy import EnergyInterval
from granular.domain.gas import Tier
from granular.domain.reads import MeterRead, ReadKind
from granular.domain.windows import Frequency
from granular.services import issuance
from granular.services.accounts import authenticate, create_api_key
from granular.services.deployment import deploy
from granular.services.devices import register_devices
from granular.services.outbox import OutboxConfig, OutboxSender
from granular.services.reservations import NewReservation, create_reservation

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.databases import postgres_database

CHAIN_ID = 31337
DEVICES = 1_000
HOURS = 24
DAY = datetime(2026, 6, 30, tzinfo=UTC)
NOW = DAY + timedelta(hours=HOURS, minutes=10)
TARGET_PER_S = 1_000
TARGET_RSS_MIB = 300


def _fleet(url: str) -> int:
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    owner_key = create_api_key(
        sessions=sessions, organization="plants", role="device_owner", label=None, now=DAY
    ).key
    buyer_key = create_api_key(
        sessions=sessions, organization="buyer", role="buyer", label=None, now=DAY
    ).key
    owner = authenticate(sessions=sessions, authorization=f"Bearer {owner_key}")
    buyer = authenticate(sessions=sessions, authorization=f"Bearer {buyer_key}")
    rows: list[tuple[int, dict[str, object] | str]] = [
        (
            i,
            {
                "externalId": f"dev-{i}",
                "countryCode": "KEN",
                "fuelCode": "ES100",
                "deviceTypeCode": "TC110",
                "capacity": 50_000,
                "commissioningDate": "2020-01-01",
                "gridInterconnection": True,
                "offTaker": "School",
            },
        )
        for i in range(DEVICES)
    ]
    results = register_devices(
        sessions=sessions, organization_id=owner.organization_id, rows=rows, now=DAY
    )
    device_ids = [r.device.id for r in results if r.device is not None]
    assert len(device_ids) == DEVICES
    with sessions.begin() as session:
        for device_id in device_ids:
            submission = add_submission(
                session=session,
                device_id=device_id,
                api_key_id=owner.api_key_id,
                received_at=NOW,
                kind="history",
                unit="Wh",
                payload={"bench": True},
                read_count=HOURS,
                accepted_count=HOURS,
                device_revision_id=None,
            )
            spans = [(DAY + timedelta(hours=h), DAY + timedelta(hours=h + 1)) for h in range(HOURS)]
            add_reads_and_intervals(
                session=session,
                device_id=device_id,
                submission_id=submission,
                reads=[
                    MeterRead(ReadKind.HISTORY, e, 10_000 + h, s) for h, (s, e) in enumerate(spans)
                ],
                intervals=[
                    (EnergyInterval(str(device_id), s, e, 10_000 + h), ReadKind.HISTORY)
                    for h, (s, e) in enumerate(spans)
                ],
            )
    create_reservation(
        sessions=sessions,
        principal=buyer,
        new=NewReservation(
            devices=frozenset(device_ids),
            frequency=Frequency.HOURLY,
            start=DAY,
            end=DAY + timedelta(days=2),
            target_volume_wh=10**15,
            authority_to_exceed=False,
            wallet=anvil_account(2).address,
            gas_tier=Tier.FAST,
        ),
        now=NOW,
    )
    engine.dispose()
    return len(device_ids)


def _issue(url: str, anvil: Anvil, deployment: dict[str, Any]) -> dict[str, Any]:
    engine = make_engine(url)
    sessions = session_factory(engine)
    account = anvil_account(0)
    context = issuance.IssuanceContext(
        chain_id=CHAIN_ID,
        registry=deployment["address"],
        issuer=account.address,
        rpc_url=anvil.url,
        batch_size=100,
    )
    sender = OutboxSender(
        engine=engine,
        rpc_url=anvil.url,
        account=account,
        config=OutboxConfig(
            chain_id=CHAIN_ID, confirmations=1, batch_size=100, poll_interval_s=0.01
        ),
    )
    started = time.perf_counter()
    planned = issuance.plan(sessions=sessions, context=context, now=NOW)
    planned_s = time.perf_counter() - started
    certificates = rounds = 0
    while True:
        rounds += 1
        sender.send_once()
        certificates += issuance.settle(
            sessions=sessions, context=context, now=NOW
        ).certificates_issued
        with sessions() as session:
            if not idb.pending_batches(session=session, chain_id=CHAIN_ID):
                break
        if rounds > 5_000:
            raise AssertionError("batches still pending after 5,000 rounds")
    elapsed = time.perf_counter() - started
    sender.close()
    engine.dispose()
    assert certificates == DEVICES * HOURS, certificates
    return {
        "certificates": certificates,
        "batches": planned.batches_submitted,
        "plan_s": round(planned_s, 2),
        "total_s": round(elapsed, 2),
        "certificates_per_s": round(certificates / elapsed),
        "target_per_s": TARGET_PER_S,
        "sender_rounds": rounds,
    }


@contextmanager
def _database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
    else:
        with postgres_database() as url:
            yield url


def one(backend: str) -> dict[str, Any]:
    with _database(backend) as url, tempfile.TemporaryDirectory() as tmp:
        _fleet(url)
        # Automine alone leaves what does not fit the block gas limit pending until another
        # transaction arrives (a real chain mines on an interval): mixed mining adds a block
        # every second, so the figure measures the worker, not that anvil artefact.
        mining = ("--block-time", "1", "--mixed-mining")
        with Anvil(args=("--gas-limit", "60000000", *mining)) as anvil:
            deployment = deploy(rpc_url=anvil.url, network="bench", directory=Path(tmp))
            figures = _issue(url, anvil, deployment)
    figures["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    figures["target_rss_mib"] = TARGET_RSS_MIB
    return figures


def run() -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for backend in ("sqlite", "postgresql"):
        done = subprocess.run(
            [sys.executable, __file__, backend], capture_output=True, text=True, timeout=1800
        )
        if done.returncode != 0:
            figures[backend] = {"error": done.stderr.strip().splitlines()[-1:]}
        else:
            figures[backend] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {backend}: {figures[backend]}", flush=True)
    return figures


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    print(json.dumps(one(sys.argv[1])))
