"""Matching claims end to end (issue 9): claims per second from the first matching pass to
the last claim confirmed on anvil and mirrored, on SQLite and PostgreSQL; gas per claim in
claimBatch.

Setup (not timed): 20 buyers' reservations, each of one plant and the buyer's own site
meter, 100 hourly windows of equal production and consumption (so each window is one
whole-slice claim, quantity 0), issued and mirrored, the issuer approved as operator of
every wallet. Timed: matching passes (one claimBatch of 100 entries per reservation), the
outbox sender to depth 1, the indexer, up to the moment the last claim is confirmed and
mirrored; the pass that then finds nothing left is the check, not timed. (The first pass
settles nothing, so the passes that submit are the claims.) Target: >= 1,000 claims/s.
Each backend runs in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from granular.adapters.chain.anvil import Anvil
from granular.adapters.chain.client import connect
from granular.adapters.chain.events import RegistryEventReader
from granular.adapters.chain.forwarder import registry_calldata
from granular.adapters.chain.keys import anvil_account
from granular.adapters.db import issuance as idb
from granular.adapters.db.engine import make_engine, session_factory
from granular.adapters.db.matching import MatchingClaimRow
from granular.adapters.db.migrate import upgrade
from granular.adapters.db.outbox import TxRequest
from granular.adapters.db.readings import add_reads_and_intervals, add_submission
from granular.domain.energy import EnergyInterval
from granular.domain.gas import Tier
from granular.domain.reads import MeterRead, ReadKind
from granular.domain.windows import Frequency
from granular.services import issuance, matching
from granular.services.accounts import authenticate, create_api_key
from granular.services.deployment import deploy
from granular.services.devices import register_devices
from granular.services.indexer import IndexerConfig, index_once
from granular.services.outbox import OutboxConfig, OutboxSender
from granular.services.reservations import NewReservation, create_reservation

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.databases import postgres_database

CHAIN_ID = 31337
RESERVATIONS = 20
HOURS = 100
DAY = datetime(2026, 6, 20, tzinfo=UTC)
NOW = DAY + timedelta(hours=HOURS, minutes=10)
TARGET_PER_S = 1_000
TARGET_GAS_PER_CLAIM = 20_000


def _device(external_id: str, kind: str) -> dict[str, object]:
    return {
        "externalId": external_id,
        "kind": kind,
        "countryCode": "KEN",
        "fuelCode": "ES100",
        "deviceTypeCode": "TC110",
        "capacity": 50_000,
        "commissioningDate": "2020-01-01",
        "gridInterconnection": True,
        "offTaker": "School",
    }


def _reads(sessions: Any, device_id: int, api_key_id: int) -> None:
    spans = [(DAY + timedelta(hours=h), DAY + timedelta(hours=h + 1)) for h in range(HOURS)]
    with sessions.begin() as session:
        submission = add_submission(
            session=session,
            device_id=device_id,
            api_key_id=api_key_id,
            received_at=NOW,
            kind="history",
            unit="Wh",
            payload={"bench": True},
            read_count=HOURS,
            accepted_count=HOURS,
            device_revision_id=None,
        )
        add_reads_and_intervals(
            session=session,
            device_id=device_id,
            submission_id=submission,
            reads=[MeterRead(ReadKind.HISTORY, e, 10_000 + h, s) for h, (s, e) in enumerate(spans)],
            intervals=[
                (EnergyInterval(str(device_id), s, e, 10_000 + h), ReadKind.HISTORY)
                for h, (s, e) in enumerate(spans)
            ],
        )


def _fleet(sessions: Any) -> list[str]:
    owner_key = create_api_key(
        sessions=sessions, organization="plants", role="device_owner", label=None, now=DAY
    ).key
    owner = authenticate(sessions=sessions, authorization=f"Bearer {owner_key}")
    wallets = []
    for r in range(RESERVATIONS):
        buyer_key = create_api_key(
            sessions=sessions, organization=f"buyer-{r}", role="buyer", label=None, now=DAY
        ).key
        buyer = authenticate(sessions=sessions, authorization=f"Bearer {buyer_key}")
        (plant,) = register_devices(
            sessions=sessions,
            organization_id=owner.organization_id,
            rows=[(0, _device(f"plant-{r}", "production"))],
            now=DAY,
        )
        (site,) = register_devices(
            sessions=sessions,
            organization_id=buyer.organization_id,
            rows=[(0, _device(f"site-{r}", "consumption"))],
            now=DAY,
        )
        assert plant.device is not None and site.device is not None, (plant, site)
        _reads(sessions, plant.device.id, owner.api_key_id)
        _reads(sessions, site.device.id, buyer.api_key_id)
        wallet = anvil_account(10 + r).address
        wallets.append(wallet)
        create_reservation(
            sessions=sessions,
            principal=buyer,
            new=NewReservation(
                devices=frozenset({plant.device.id}),
                consumption_devices=frozenset({site.device.id}),
                frequency=Frequency.HOURLY,
                start=DAY,
                end=DAY + timedelta(days=6),
                target_volume_wh=10**15,
                authority_to_exceed=False,
                wallet=wallet,
                gas_tier=Tier.FAST,
            ),
            now=NOW,
        )
    return wallets


def _drain(sender: OutboxSender, sessions: Any) -> None:
    for _ in range(5_000):
        sender.send_once()
        with sessions() as session:
            busy = session.scalar(
                select(TxRequest.id).where(
                    TxRequest.state.not_in(["confirmed", "reverted", "failed"])
                )
            )
        if busy is None:
            return
    raise AssertionError("requests still in flight after 5,000 rounds")


def one(backend: str) -> dict[str, Any]:
    with _database(backend) as url, tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(url)
        upgrade(engine)
        sessions = session_factory(engine)
        wallets = _fleet(sessions)
        with Anvil(args=("--gas-limit", "60000000", "--accounts", "40")) as anvil:
            deployment = deploy(rpc_url=anvil.url, network="bench", directory=Path(tmp))
            issuer = anvil_account(0)
            w3, _ = connect(anvil.url)
            context = issuance.IssuanceContext(
                chain_id=CHAIN_ID,
                registry=deployment["address"],
                issuer=issuer.address,
                rpc_url=anvil.url,
                batch_size=100,
            )
            sender = OutboxSender(
                engine=engine,
                rpc_url=anvil.url,
                account=issuer,
                config=OutboxConfig(
                    chain_id=CHAIN_ID, confirmations=1, batch_size=100, poll_interval_s=0.01
                ),
            )
            issuance.plan(sessions=sessions, context=context, now=NOW)
            while True:
                sender.send_once()
                issuance.settle(sessions=sessions, context=context, now=NOW)
                with sessions() as session:
                    if not idb.pending_batches(session=session, chain_id=CHAIN_ID):
                        break
            for wallet in wallets:  # each buyer approves the issuer (anvil's unlocked accounts)
                approval = w3.eth.send_transaction(
                    {
                        "from": wallet,
                        "to": deployment["address"],
                        "data": registry_calldata("setOperator", issuer.address, True),
                    }
                )
                w3.eth.wait_for_transaction_receipt(approval)
            reader = RegistryEventReader(w3, deployment["address"])
            config = IndexerConfig(
                chain_id=CHAIN_ID, deployment_block=deployment["blockNumber"], confirmations=0
            )
            index_once(sessions=sessions, source=reader, config=config, now=lambda: NOW)
            ctx = matching.MatchingContext(
                chain_id=CHAIN_ID,
                registry=deployment["address"],
                issuer=issuer.address,
                batch_size=100,
                tier=Tier.FAST,
            )
            started = time.perf_counter()
            claims = passes = 0
            elapsed = 0.0
            parts = {"match_s": 0.0, "send_s": 0.0, "index_s": 0.0}
            while True:
                passes += 1
                mark = time.perf_counter()
                report = matching.claim(sessions=sessions, context=ctx, now=NOW)
                parts["match_s"] += time.perf_counter() - mark
                claims += report.claims_submitted
                if report.claims_submitted == 0:
                    with sessions() as session:
                        sent = session.scalar(
                            select(MatchingClaimRow.id).where(MatchingClaimRow.state == "sent")
                        )
                    if sent is None:
                        break  # the check pass: nothing left (not counted in the time)
                mark = time.perf_counter()
                _drain(sender, sessions)
                parts["send_s"] += time.perf_counter() - mark
                mark = time.perf_counter()
                index_once(sessions=sessions, source=reader, config=config, now=lambda: NOW)
                parts["index_s"] += time.perf_counter() - mark
                # Every claim so far is confirmed and in the mirror here.
                elapsed = time.perf_counter() - started
                if passes > 50:
                    raise AssertionError("matching not done after 50 passes")
            with sessions() as session:
                hashes = list(
                    session.scalars(
                        select(MatchingClaimRow.tx_hash)
                        .where(MatchingClaimRow.state == "confirmed")
                        .distinct()
                    )
                )
            gas = sum(int(w3.eth.get_transaction_receipt(h)["gasUsed"]) for h in hashes if h)
            sender.close()
        engine.dispose()
    assert claims == RESERVATIONS * HOURS, claims
    return {
        "claims": claims,
        "claim_batches": len(hashes),
        "passes": passes,
        "total_s": round(elapsed, 2),
        **{name: round(value, 2) for name, value in parts.items()},
        "claims_per_s": round(claims / elapsed),
        "target_per_s": TARGET_PER_S,
        "gas_per_claim": round(gas / claims),
        "target_gas_per_claim": TARGET_GAS_PER_CLAIM,
    }


@contextmanager
def _database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
    else:
        with postgres_database() as url:
            yield url


def run() -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for backend in ("sqlite", "postgresql"):
        done = subprocess.run(
            [sys.executable, __file__, backend], capture_output=True, text=True, timeout=1800
        )
        if done.returncode != 0:
            figures[backend] = {"error": done.stderr.strip().splitlines()[-3:]}
        else:
            figures[backend] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {backend}: {figures[backend]}", flush=True)
    return figures


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    print(json.dumps(one(sys.argv[1])))
