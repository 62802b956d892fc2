"""The reservation lifecycle job: complete by time, release the devices of closed
reservations at the moment they closed (on SQLite and PostgreSQL; no chain)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.reservations import get_reservation
from granular.domain.reads import ReadKind
from granular.domain.reservations import ReservationStatus
from granular.domain.windows import Frequency
from granular.services import issuance
from granular.services.reservations import status_of
from tests.integration.issuance_helpers import add_device, items, principal, reads, reserve, utc

WALLET = "0x" + "ab" * 20


def test_an_expired_reservation_completes_at_its_end_and_releases_its_devices(
    sessions: sessionmaker[Session],
) -> None:
    owner = principal(sessions, "plant", "device_owner")
    buyer = principal(sessions, "buyer", "buyer")
    now = utc(2026, 6, 30)
    device = add_device(sessions, owner, "d1", now=now)
    other = add_device(sessions, owner, "d2", now=now)
    expired = reserve(
        sessions,
        buyer,
        [device],
        frequency=Frequency.HOURLY,
        start=utc(2026, 6, 29),
        end=utc(2026, 6, 30, 12),
        wallet=WALLET,
        now=now,
    )
    live = reserve(
        sessions,
        buyer,
        [other],
        frequency=Frequency.HOURLY,
        start=utc(2026, 6, 29),
        end=utc(2026, 7, 30),
        wallet=WALLET,
        now=now,
    )
    later = utc(2026, 7, 1)

    assert issuance.advance_reservations(sessions=sessions, now=later) == 1
    assert issuance.advance_reservations(sessions=sessions, now=later) == 0  # idempotent

    with sessions() as session:
        done = get_reservation(session=session, reservation_id=expired)
        still = get_reservation(session=session, reservation_id=live)
    assert done is not None and still is not None
    assert done.completed_at == utc(2026, 6, 30, 12)
    assert [s.released_at for s in done.stints] == [utc(2026, 6, 30, 12)]
    assert status_of(done, later) is ReservationStatus.COMPLETED
    assert still.completed_at is None and [s.released_at for s in still.stints] == [None]


def _context() -> issuance.IssuanceContext:
    # Planning writes items and outbox requests only: no chain is needed to test it.
    return issuance.IssuanceContext(
        chain_id=31337, registry=WALLET, issuer="0x" + "cd" * 20, rpc_url="http://127.0.0.1:1"
    )


def test_a_window_is_due_at_its_end_plus_grace_and_is_cut_to_the_reservation(
    sessions: sessionmaker[Session],
) -> None:
    owner = principal(sessions, "plant", "device_owner")
    buyer = principal(sessions, "buyer", "buyer")
    device = add_device(sessions, owner, "d1", now=utc(2026, 6, 30))
    reads(
        sessions,
        owner,
        "d1",
        ReadKind.HISTORY,
        [(utc(2026, 6, 30, 0), utc(2026, 6, 30, 2), 1_200)],
        now=utc(2026, 6, 30, 3),
    )
    rid = reserve(
        sessions,
        buyer,
        [device],
        frequency=Frequency.HOURLY,
        start=utc(2026, 6, 30, 0, 30),
        end=utc(2026, 6, 30, 1, 30),
        wallet=WALLET,
        now=utc(2026, 6, 30, 3),
    )
    grace = timedelta(seconds=_context().grace_s)
    just_before = utc(2026, 6, 30, 1) + grace - timedelta(seconds=1)

    assert issuance.plan(sessions=sessions, context=_context(), now=just_before).items_planned == 0
    assert (
        issuance.plan(
            sessions=sessions, context=_context(), now=utc(2026, 6, 30, 1) + grace
        ).items_planned
        == 1
    )
    issuance.plan(sessions=sessions, context=_context(), now=utc(2026, 6, 30, 3))

    found = items(sessions, rid)
    # 1,200 Wh over 00:00-02:00; the reservation covers 00:30-01:30: 300 Wh in each window.
    assert [(i.period_start, i.period_end, i.quantity_wh) for i in found] == [
        (utc(2026, 6, 30, 0, 30), utc(2026, 6, 30, 1), 300),
        (utc(2026, 6, 30, 1), utc(2026, 6, 30, 1, 30), 300),
    ]
    # Every window after the end was considered: the reservation is not planned again.
    assert (
        issuance.plan(sessions=sessions, context=_context(), now=utc(2026, 7, 1)).items_planned == 0
    )
