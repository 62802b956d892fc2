"""Issuance under crashes and concurrency: kill -9 while planning or sending, then a
restart, mints each certificate exactly once; of two planners on one database only the
lease holder plans, and each certificate is planned once."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.anvil import Anvil
from granular.domain.reads import ReadKind
from granular.domain.windows import Frequency
from granular.paths import project_root
from granular.services import issuance
from tests.integration.chain import Chain
from tests.integration.issuance_helpers import (
    add_device,
    certificate_of,
    context,
    issue_all,
    items,
    new_sender,
    principal,
    reads,
    reserve,
    utc,
)
from tests.integration.outbox_helpers import _close_senders  # noqa: F401  (autouse)

DAY = utc(2026, 6, 30)
NOW = utc(2026, 6, 30, 3, 0)
DEVICES = 3  # x 2 due hourly windows = 6 items


def _fleet(sessions: sessionmaker[Session], wallet: str) -> int:
    owner = principal(sessions, "plant", "device_owner")
    buyer_org = principal(sessions, "buyer", "buyer")
    devices = []
    for i in range(DEVICES):
        devices.append(add_device(sessions, owner, f"d{i}", now=DAY))
        reads(
            sessions,
            owner,
            f"d{i}",
            ReadKind.HISTORY,
            [
                (DAY, utc(2026, 6, 30, 1), 100 + i),
                (utc(2026, 6, 30, 1), utc(2026, 6, 30, 2), 200 + i),
            ],
            now=NOW,
        )
    return reserve(
        sessions,
        buyer_org,
        devices,
        frequency=Frequency.HOURLY,
        start=DAY,
        end=utc(2026, 7, 1),
        wallet=wallet,
        now=NOW,
    )


def _assert_minted_once(chain: Chain, sessions: sessionmaker[Session], reservation_id: int) -> None:
    found = items(sessions, reservation_id)
    assert len(found) == 2 * DEVICES
    assert {i.state for i in found} == {"issued"}
    events = chain.registry.events.CertificateIssued().get_logs(from_block=0)
    assert len(events) == len(found)  # nothing minted twice
    by_id = {e["args"]["certificateId"]: e["args"] for e in events}
    for item in found:
        event = by_id[certificate_of(sessions, item.id)]
        assert event["quantityWh"] == item.quantity_wh
        assert "0x" + bytes(event["dataHash"]).hex() == item.data_hash


@pytest.mark.parametrize("stop_in", ["plan", "send"], ids=["between-two-batches", "mid-send"])
def test_kill_9_in_the_middle_of_issuance_then_restart_mints_nothing_twice(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
    stop_in: str,
) -> None:
    reservation_id = _fleet(sessions, buyer)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.issuance_worker",
            engine.url.render_as_string(hide_password=False),
            anvil.url,
            deployment["address"],
            NOW.isoformat(),
            "--stop-in",
            stop_in,
        ],
        cwd=project_root(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        readable, _, _ = select.select([worker.stdout], [], [], 120)
        line = worker.stdout.readline() if readable else ""
        assert line.strip() == f"stopped in {stop_in}", (line, worker.poll())
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    at_kill = len(items(sessions, reservation_id))
    assert at_kill == (2 if stop_in == "plan" else 2 * DEVICES)  # one batch of 2, or all

    ctx = context(anvil, deployment, issuer_account.address, batch_size=2)
    again = issuance.plan(sessions=sessions, context=ctx, now=NOW)
    assert again.items_planned == 2 * DEVICES - at_kill
    issue_all(sessions, ctx, new_sender(engine, anvil, issuer_account), NOW)
    assert issuance.plan(sessions=sessions, context=ctx, now=NOW).items_planned == 0

    _assert_minted_once(chain, sessions, reservation_id)


def test_of_two_planners_on_one_database_only_the_lease_holder_plans(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
) -> None:
    reservation_id = _fleet(sessions, buyer)
    ctx = context(anvil, deployment, issuer_account.address, batch_size=2)
    first = issuance.planner_lease(engine, ctx.chain_id)
    second = issuance.planner_lease(engine, ctx.chain_id)
    try:
        assert first.acquire()
        refused = issuance.plan(sessions=sessions, context=ctx, now=NOW, lease=second)
        assert refused.items_planned == 0 and refused.warnings
        results: list[issuance.PassReport] = []
        barrier = threading.Barrier(2)

        def run(lease: Any) -> None:
            barrier.wait()
            results.append(issuance.plan(sessions=sessions, context=ctx, now=NOW, lease=lease))

        threads = [threading.Thread(target=run, args=(lease,)) for lease in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        first.release()
        second.release()
    assert sorted(r.items_planned for r in results) == [0, 2 * DEVICES]
    issue_all(sessions, ctx, new_sender(engine, anvil, issuer_account), NOW)
    _assert_minted_once(chain, sessions, reservation_id)


def test_two_planners_without_the_lease_still_plan_each_item_once(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
) -> None:
    """The unique item key is the last line of defence: a racing batch is rolled back."""
    reservation_id = _fleet(sessions, buyer)
    ctx = context(anvil, deployment, issuer_account.address, batch_size=2)
    results: list[issuance.PassReport] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        results.append(issuance.plan(sessions=sessions, context=ctx, now=NOW))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.items_planned for r in results) == 2 * DEVICES
    issue_all(sessions, ctx, new_sender(engine, anvil, issuer_account), NOW)
    _assert_minted_once(chain, sessions, reservation_id)
