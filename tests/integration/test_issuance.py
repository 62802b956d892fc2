"""Issuance end to end on anvil, on SQLite and PostgreSQL: reads of every kind become
certificates with the right quantity per window, top-ups, the target cap, consumption,
the physical re-check, bisection of a reverting item, verify and show."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, delete, update
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.anvil import Anvil
from granular.adapters.db.headers import CertificateHeaderRow
from granular.adapters.db.issuance import IssuanceBatchRow, IssuanceItemRow, IssuedCertificateRow
from granular.adapters.db.outbox import TxAttempt, TxRequest
from granular.domain.reads import ReadKind
from granular.domain.windows import Frequency
from granular.services import issuance
from tests.integration.chain import Chain
from tests.integration.issuance_helpers import (
    add_device,
    certificate_of,
    context,
    issue_all,
    items,
    new_sender,
    on_chain,
    principal,
    reads,
    reservation_row,
    reserve,
    utc,
)
from tests.integration.outbox_helpers import _close_senders  # noqa: F401  (autouse)

DAY = utc(2026, 6, 30)
NOW = utc(2026, 6, 30, 3, 0)  # windows 00-01 and 01-02 are due (end + 5 min grace)


def _by_window(found: list[Any]) -> dict[tuple[int, datetime, int], tuple[int, str]]:
    return {(i.device_id, i.window_start, i.sequence): (i.quantity_wh, i.state) for i in found}


def test_reads_of_every_kind_become_hourly_certificates(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = principal(sessions, "plant", "device_owner")
    buyer_org = principal(sessions, "buyer", "buyer")
    meter_owner = principal(sessions, "buyer", "device_owner")
    history = add_device(sessions, owner, "hist", now=DAY)
    delta = add_device(sessions, owner, "delta", now=DAY)
    meter = add_device(sessions, meter_owner, "site", kind="consumption", now=DAY)
    h = utc(2026, 6, 30, 0)
    reads(
        sessions,
        owner,
        "hist",
        ReadKind.HISTORY,
        [(h, utc(2026, 6, 30, 1), 5_000), (utc(2026, 6, 30, 1), utc(2026, 6, 30, 2), 6_000)],
        now=NOW,
    )
    # Baseline at 00:00, then one interval over both windows: split 4,000 / 4,000.
    reads(
        sessions,
        owner,
        "delta",
        ReadKind.DELTA,
        [(None, h, 0), (None, utc(2026, 6, 30, 2), 8_000)],
        now=NOW,
    )
    reads(
        sessions,
        meter_owner,
        "site",
        ReadKind.AGGREGATE,
        [(None, h, 100_000), (None, utc(2026, 6, 30, 2), 103_001)],
        now=NOW,
    )
    rid = reserve(
        sessions,
        buyer_org,
        [history, delta],
        frequency=Frequency.HOURLY,
        start=h,
        end=utc(2026, 7, 1),
        wallet=buyer,
        now=NOW,
        consumption=[meter],
    )
    ctx = context(anvil, deployment, issuer_account.address)

    report = issuance.plan(sessions=sessions, context=ctx, now=NOW)

    assert report.items_planned == 6 and report.batches_submitted == 1
    assert issuance.plan(sessions=sessions, context=ctx, now=NOW).items_planned == 0
    caplog.set_level(logging.INFO, logger=issuance.LOGGER_NAME)
    driven = issue_all(sessions, ctx, new_sender(engine, anvil, issuer_account), NOW)
    assert driven.certificates == 6
    found = items(sessions, rid)
    h1 = utc(2026, 6, 30, 1)
    assert _by_window(found) == {
        (history, h, 1): (5_000, "issued"),
        (history, h1, 1): (6_000, "issued"),
        (delta, h, 1): (4_000, "issued"),
        (delta, h1, 1): (4_000, "issued"),
        (meter, h, 1): (1_501, "issued"),  # largest remainder: the earlier window first
        (meter, h1, 1): (1_500, "issued"),
    }
    for item in found:
        owner_on_chain, kind, state, quantity, _ = on_chain(
            chain.w3, chain.registry, certificate_of(sessions, item.id)
        )
        assert (owner_on_chain, quantity, state) == (buyer, item.quantity_wh, 1)
        assert kind == (1 if item.device_id == meter else 0)
    lines = [
        json.loads(r.getMessage()) for r in caplog.records if "certificate_issued" in r.getMessage()
    ]
    assert len(lines) == 6
    assert set(lines[0]) == {
        "event",
        "certificateId",
        "txHash",
        "reservationId",
        "deviceId",
        "periodStart",
        "periodEnd",
        "quantityWh",
        "kind",
    }
    issued_wh, failed_wh, leftover_wh, completed_at = reservation_row(sessions, rid)
    assert (issued_wh, failed_wh, leftover_wh, completed_at) == (22_001, 0, 0, None)
    # Nothing new: nothing planned, nothing settled.
    assert issuance.plan(sessions=sessions, context=ctx, now=NOW).items_planned == 0

    # verify: the header hashes to the chain's dataHash; a tampered header does not.
    certificate_id = certificate_of(sessions, found[0].id)
    verified = issuance.verify_certificate(
        sessions=sessions, context=ctx, certificate_id=certificate_id
    )
    assert verified.ok, verified
    assert verified.data_hash_on_chain == verified.data_hash_stored == found[0].data_hash
    shown = issuance.show_certificate(
        sessions=sessions, chain_id=ctx.chain_id, certificate_id=certificate_id
    )
    assert shown["header"]["quantity"] == found[0].quantity_wh
    assert shown["txHash"] == verified.tx_hash
    assert shown["provenance"]["intervals"] and shown["provenance"]["maxEnergy"]["passed"]
    with sessions.begin() as session:
        session.execute(
            update(CertificateHeaderRow)
            .where(CertificateHeaderRow.data_hash == found[0].data_hash)
            .values(header_json=json.dumps({**shown["header"], "quantity": 1}))
        )
    tampered = issuance.verify_certificate(
        sessions=sessions, context=ctx, certificate_id=certificate_id
    )
    assert not tampered.ok and tampered.reason is not None and "tampered" in tampered.reason


@pytest.mark.parametrize(
    ("frequency", "start", "end", "read", "now", "expected"),
    [
        (
            Frequency.DAILY,
            utc(2026, 6, 28),
            utc(2026, 7, 28),
            (utc(2026, 6, 28, 12), utc(2026, 6, 29, 12), 24_000),
            utc(2026, 6, 30, 1),
            {utc(2026, 6, 28): 12_000, utc(2026, 6, 29): 12_000},
        ),
        (
            Frequency.MONTHLY,
            utc(2026, 5, 1),
            utc(2026, 8, 1),
            (utc(2026, 5, 31), utc(2026, 6, 2), 4_801),
            utc(2026, 7, 1, 1),
            {utc(2026, 5, 1): 2_401, utc(2026, 6, 1): 2_400},
        ),
        (
            Frequency.QUARTERLY,
            utc(2026, 1, 1),
            utc(2026, 10, 1),
            (utc(2026, 3, 31), utc(2026, 4, 2), 4_800),
            utc(2026, 7, 1, 1),
            {utc(2026, 1, 1): 2_400, utc(2026, 4, 1): 2_400},
        ),
    ],
    ids=["daily", "calendar-month", "calendar-quarter"],
)
def test_a_read_across_windows_is_split_per_calendar_window(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
    frequency: Frequency,
    start: datetime,
    end: datetime,
    read: tuple[datetime, datetime, int],
    now: datetime,
    expected: dict[datetime, int],
) -> None:
    owner = principal(sessions, "plant", "device_owner")
    buyer_org = principal(sessions, "buyer", "buyer")
    device = add_device(sessions, owner, "d1", now=start)
    reads(sessions, owner, "d1", ReadKind.HISTORY, [read], now=now)
    rid = reserve(
        sessions,
        buyer_org,
        [device],
        frequency=frequency,
        start=start,
        end=end,
        wallet=buyer,
        now=now,
    )
    ctx = context(anvil, deployment, issuer_account.address)

    issuance.plan(sessions=sessions, context=ctx, now=now)
    issue_all(sessions, ctx, new_sender(engine, anvil, issuer_account), now)

    found = items(sessions, rid)
    assert {i.window_start: i.quantity_wh for i in found} == expected
    assert {i.state for i in found} == {"issued"}
    for item in found:
        assert (
            on_chain(chain.w3, chain.registry, certificate_of(sessions, item.id))[3]
            == item.quantity_wh
        )


def test_a_late_read_is_a_top_up_with_the_next_sequence(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
) -> None:
    owner = principal(sessions, "plant", "device_owner")
    buyer_org = principal(sessions, "buyer", "buyer")
    device = add_device(sessions, owner, "d1", now=DAY)
    reads(sessions, owner, "d1", ReadKind.HISTORY, [(DAY, utc(2026, 6, 30, 0, 30), 2_000)], now=NOW)
    rid = reserve(
        sessions,
        buyer_org,
        [device],
        frequency=Frequency.HOURLY,
        start=DAY,
        end=utc(2026, 7, 1),
        wallet=buyer,
        now=NOW,
    )
    ctx = context(anvil, deployment, issuer_account.address)
    sender = new_sender(engine, anvil, issuer_account)
    first = issuance.plan(sessions=sessions, context=ctx, now=NOW)
    issue_all(sessions, ctx, sender, NOW)
    assert any("has no data" in w for w in first.warnings)  # the 01:00 window

    reads(
        sessions,
        owner,
        "d1",
        ReadKind.HISTORY,
        [(utc(2026, 6, 30, 0, 30), utc(2026, 6, 30, 1), 1_000)],
        now=NOW,
    )
    later = utc(2026, 6, 30, 3, 30)
    second = issuance.plan(sessions=sessions, context=ctx, now=later)
    issue_all(sessions, ctx, sender, later)

    assert second.items_planned == 1
    # The 01:00 window was warned about once; the 02:00 one is new.
    assert [w for w in second.warnings if "has no data" in w] == [
        f"reservation {rid}: window 2026-06-30T02:00:00+00:00..2026-06-30T03:00:00+00:00 of device "
        f"{device} has no data"
    ]
    assert _by_window(items(sessions, rid)) == {
        (device, DAY, 1): (2_000, "issued"),
        (device, DAY, 2): (1_000, "issued"),
    }
    assert reservation_row(sessions, rid)[0] == 3_000


@pytest.mark.parametrize("authority", [False, True], ids=["without-authority", "with-authority"])
def test_the_target_caps_issuance_unless_authority_to_exceed(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
    authority: bool,
) -> None:
    owner = principal(sessions, "plant", "device_owner")
    buyer_org = principal(sessions, "buyer", "buyer")
    device = add_device(sessions, owner, "d1", now=DAY)
    reads(
        sessions,
        owner,
        "d1",
        ReadKind.HISTORY,
        [(DAY, utc(2026, 6, 30, 1), 5_000), (utc(2026, 6, 30, 1), utc(2026, 6, 30, 2), 6_000)],
        now=NOW,
    )
    rid = reserve(
        sessions,
        buyer_org,
        [device],
        frequency=Frequency.HOURLY,
        start=DAY,
        end=utc(2026, 7, 1),
        wallet=buyer,
        target_wh=7_000,
        authority=authority,
        now=NOW,
    )
    ctx = context(anvil, deployment, issuer_account.address)

    report = issuance.plan(sessions=sessions, context=ctx, now=NOW)
    driven = issue_all(sessions, ctx, new_sender(engine, anvil, issuer_account), NOW)

    # The buyer is told when the target is confirmed on chain, not when it is planned.
    assert not any("target of 7000 Wh reached" in w for w in report.warnings)
    [reached] = [w for w in driven.warnings if "target of 7000 Wh reached" in w]
    assert reached.endswith("; the reservation completes") is not authority
    h1 = utc(2026, 6, 30, 1)
    issued_wh, failed_wh, leftover_wh, completed_at = reservation_row(sessions, rid)
    if authority:
        assert _by_window(items(sessions, rid)) == {
            (device, DAY, 1): (5_000, "issued"),
            (device, h1, 1): (6_000, "issued"),
        }
        assert (issued_wh, leftover_wh, completed_at) == (11_000, 0, None)
    else:
        assert _by_window(items(sessions, rid)) == {
            (device, DAY, 1): (5_000, "issued"),
            (device, h1, 1): (2_000, "issued"),
            (device, h1, 2): (4_000, "leftover"),
        }
        assert (issued_wh, leftover_wh) == (7_000, 4_000) and completed_at is not None
        # Completed: later reads are not planned.
        reads(
            sessions,
            owner,
            "d1",
            ReadKind.HISTORY,
            [(utc(2026, 6, 30, 2), utc(2026, 6, 30, 3), 1)],
            now=NOW,
        )
        assert (
            issuance.plan(sessions=sessions, context=ctx, now=utc(2026, 6, 30, 4)).items_planned
            == 0
        )
    assert failed_wh == 0


def test_a_capacity_lowered_after_the_reads_fails_the_item_with_the_numbers(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
) -> None:
    owner = principal(sessions, "plant", "device_owner")
    buyer_org = principal(sessions, "buyer", "buyer")
    device = add_device(sessions, owner, "d1", capacity_w=10_000, now=DAY)
    reads(sessions, owner, "d1", ReadKind.HISTORY, [(DAY, utc(2026, 6, 30, 1), 6_000)], now=NOW)
    add_device(sessions, owner, "d1", capacity_w=5_000, now=NOW)  # a new revision
    rid = reserve(
        sessions,
        buyer_org,
        [device],
        frequency=Frequency.HOURLY,
        start=DAY,
        end=utc(2026, 7, 1),
        wallet=buyer,
        now=NOW,
    )
    ctx = context(anvil, deployment, issuer_account.address)

    report = issuance.plan(sessions=sessions, context=ctx, now=NOW)

    assert (report.items_failed, report.batches_submitted) == (1, 0)
    [item] = items(sessions, rid)
    assert (item.state, item.quantity_wh, item.failure_code) == (
        "failed",
        6_000,
        "max_energy_physical",
    )
    assert "exceeds the physical bound of 5000 Wh" in (item.failure_detail or "")
    assert reservation_row(sessions, rid)[:3] == (0, 6_000, 0)
    assert issuance.plan(sessions=sessions, context=ctx, now=NOW).items_planned == 0


def test_a_reverting_item_is_isolated_by_bisection_and_the_others_are_issued(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
    stranger: str,
) -> None:
    chain.send(chain.registry.functions.closeWallet(), stranger)  # nothing may be sent there
    owner = principal(sessions, "plant", "device_owner")
    buyer_org = principal(sessions, "buyer", "buyer")
    devices = [add_device(sessions, owner, f"d{i}", now=DAY) for i in range(3)]
    for i in range(3):
        reads(
            sessions,
            owner,
            f"d{i}",
            ReadKind.HISTORY,
            [(DAY, utc(2026, 6, 30, 1), 1_000 + i)],
            now=NOW,
        )
    good = reserve(
        sessions,
        buyer_org,
        devices[:2],
        frequency=Frequency.HOURLY,
        start=DAY,
        end=utc(2026, 7, 1),
        wallet=buyer,
        now=NOW,
    )
    closed = reserve(
        sessions,
        buyer_org,
        devices[2:],
        frequency=Frequency.HOURLY,
        start=DAY,
        end=utc(2026, 7, 1),
        wallet=stranger,
        now=NOW,
    )
    ctx = context(anvil, deployment, issuer_account.address)

    assert issuance.plan(sessions=sessions, context=ctx, now=NOW).batches_submitted == 1
    driven = issue_all(sessions, ctx, new_sender(engine, anvil, issuer_account), NOW)

    assert (driven.certificates, driven.failed) == (2, 1)
    assert {i.state for i in items(sessions, good)} == {"issued"}
    [bad] = items(sessions, closed)
    # Reverted: the next plan takes its volume up again (see test_issuance_settlement).
    assert bad.state == "reverted" and bad.failure_code == "CertificateRegistryWalletClosed"
    assert reservation_row(sessions, closed)[:3] == (0, 1_002, 0)


def test_a_batch_already_on_chain_is_recorded_from_its_events_never_minted_again(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
) -> None:
    """A database restored from before the confirmation: the request is queued again, its
    estimate reverts with BatchAlreadyIssued, and settle records the certificates the
    chain holds instead of bisecting (which would mint them twice)."""
    owner = principal(sessions, "plant", "device_owner")
    buyer_org = principal(sessions, "buyer", "buyer")
    devices = [add_device(sessions, owner, f"d{i}", now=DAY) for i in range(2)]
    for i in range(2):
        reads(
            sessions,
            owner,
            f"d{i}",
            ReadKind.HISTORY,
            [(DAY, utc(2026, 6, 30, 1), 700 + i)],
            now=NOW,
        )
    rid = reserve(
        sessions,
        buyer_org,
        devices,
        frequency=Frequency.HOURLY,
        start=DAY,
        end=utc(2026, 7, 1),
        wallet=buyer,
        now=NOW,
    )
    ctx = context(anvil, deployment, issuer_account.address)
    issuance.plan(sessions=sessions, context=ctx, now=NOW)
    sender = new_sender(engine, anvil, issuer_account)
    issue_all(sessions, ctx, sender, NOW)
    before = {i.id: certificate_of(sessions, i.id) for i in items(sessions, rid)}
    with sessions.begin() as session:  # "restore" the database to before the confirmation
        session.execute(delete(IssuedCertificateRow))
        session.execute(update(IssuanceItemRow).values(state="pending"))
        session.execute(update(IssuanceBatchRow).values(state="pending", tx_hash=None))
        session.execute(delete(TxAttempt))
        session.execute(
            update(TxRequest).values(
                state="queued", nonce=None, tx_hash=None, block_number=None, block_hash=None
            )
        )

    driven = issue_all(sessions, ctx, sender, NOW)

    assert (driven.certificates, driven.failed) == (2, 0)
    after = {i.id: certificate_of(sessions, i.id) for i in items(sessions, rid)}
    assert after == before
    assert len(chain.registry.events.CertificateIssued().get_logs(from_block=0)) == 2
