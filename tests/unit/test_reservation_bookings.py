"""The pure helpers of the reservation service: wallets, when a stint ends, status, the
period each device covered."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from granular.adapters.db.reservations import BookingRecord, Stint, StoredReservation
from granular.services.reservations import (
    InvalidWallet,
    ReservationStatus,
    blocks_device,
    booking_of,
    checksum_wallet,
    closed_at,
    covered_until,
    status_of,
    stint_release,
)

CHECKSUMMED = "0x52908400098527886E0F7030069857D2E4169EE7"
START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 7, 1, tzinfo=UTC)
T = datetime(2026, 3, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)


def reservation(*stints: Stint, **changes: object) -> StoredReservation:
    base = StoredReservation(
        id=7,
        organization_id=1,
        frequency="monthly",
        start=START,
        end=END,
        target_volume_wh=1_000,
        authority_to_exceed=False,
        wallet=CHECKSUMMED,
        gas_tier="standard",
        created_at=START,
        updated_at=START,
        ended_at=None,
        completed_at=None,
        issued_wh=0,
        failed_wh=0,
        leftover_wh=0,
        stints=stints,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# --- wallets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [CHECKSUMMED.lower(), "0x" + CHECKSUMMED[2:].upper(), CHECKSUMMED],
    ids=["lower", "upper", "already-checksummed"],
)
def test_wallets_are_stored_in_eip55_spelling(given: str) -> None:
    assert checksum_wallet(given) == CHECKSUMMED


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        (CHECKSUMMED[:-1] + "e", "wrong EIP-55 checksum"),
        (CHECKSUMMED[:-1], "40 hex digits"),
        (CHECKSUMMED[2:] + "00", "40 hex digits"),
        ("0x" + "g" * 40, "40 hex digits"),
    ],
    ids=["bad-checksum", "39-digits", "no-0x", "not-hex"],
)
def test_a_bad_wallet_is_named_with_its_reason(given: str, reason: str) -> None:
    with pytest.raises(InvalidWallet) as raised:
        checksum_wallet(given)
    assert raised.value.details["field"] == "wallet"
    assert reason in str(raised.value.details["reason"])
    assert isinstance(raised.value, ValueError)  # so pydantic reports it against the field


# --- when a stint ends --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("released_at", "ended_at", "completed_at", "expected"),
    [
        (None, None, None, END),
        (T, None, None, T),
        (None, T, None, T),
        (None, None, T, T),
        (T + HOUR, T, T + 2 * HOUR, T),
        (None, None, END + HOUR, END),
    ],
    ids=["held-until-end", "removed", "ended", "completed", "earliest-wins", "end-caps"],
)
def test_a_stint_ends_at_the_first_release(
    released_at: datetime | None,
    ended_at: datetime | None,
    completed_at: datetime | None,
    expected: datetime,
) -> None:
    moment = stint_release(
        end=END, released_at=released_at, ended_at=ended_at, completed_at=completed_at
    )
    assert moment == expected


def test_a_booking_record_becomes_a_domain_booking() -> None:
    record = BookingRecord(3, 7, START, END, None, None, T)
    booking = booking_of(record)
    assert (booking.device, booking.reservation_id, booking.start, booking.end) == (
        "3",
        "7",
        START,
        END,
    )
    assert booking.released_at == T
    assert booking.available_at == T + 12 * HOUR


@pytest.mark.parametrize(
    ("now", "blocked"),
    [
        (T - SECOND, True),
        (T, True),
        (T + 12 * HOUR - SECOND, True),
        (T + 12 * HOUR, False),
    ],
    ids=["held", "just-released", "1s-before-12h", "exactly-12h"],
)
def test_a_device_is_blocked_until_12h_after_its_release(now: datetime, blocked: bool) -> None:
    booking = booking_of(BookingRecord(3, 7, START, END, T, None, None))
    assert blocks_device(booking, now) is blocked


# --- status -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "now", "status", "closed"),
    [
        ({}, END - SECOND, ReservationStatus.LIVE, None),
        ({}, END, ReservationStatus.COMPLETED, END),
        ({"ended_at": T}, T, ReservationStatus.ENDED, T),
        ({"completed_at": T}, T, ReservationStatus.COMPLETED, T),
        ({"ended_at": T + HOUR, "completed_at": T}, END, ReservationStatus.ENDED, T),
    ],
    ids=["live-1s-before-end", "completed-at-end", "ended", "completed", "ended-wins-the-name"],
)
def test_status(
    changes: dict[str, object],
    now: datetime,
    status: ReservationStatus,
    closed: datetime | None,
) -> None:
    found = reservation(**changes)
    assert status_of(found, now) is status
    assert closed_at(found, now) == closed


# --- covered periods ----------------------------------------------------------------------


def test_each_device_covers_until_its_release_and_a_re_added_one_the_longer() -> None:
    found = reservation(
        Stint(1, START, None),
        Stint(2, START, T),
        Stint(3, START, T),
        Stint(3, T + HOUR, None),
    )
    assert covered_until(found) == {1: END, 2: T, 3: END}
    ended = replace(found, ended_at=T + 2 * HOUR)
    assert covered_until(ended) == {1: T + 2 * HOUR, 2: T, 3: T + 2 * HOUR}
