"""The reservation lifecycle job: complete by time, release the devices of closed
reservations at the moment they closed (on SQLite and PostgreSQL; no chain)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.reservations import get_reservation
from granular.domain.windows import Frequency
from granular.services import issuance
from granular.services.reservations import ReservationStatus, status_of
from tests.integration.issuance_helpers import add_device, principal, reserve, utc

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
