"""The pure helpers of the reservation service: wallets, when a stint ends, status, the
period each device covered, the share of an interval that falls in it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from granular.adapters.db.readings import SpanEnergy
from granular.adapters.db.reservations import BookingRecord, Stint, StoredReservation
from granular.domain.energy import EnergyInterval
from granular.domain.reservations import (
    ReservationStatus,
    blocks_device,
    closed_at,
    stint_release,
)
from granular.domain.windows import Frequency, share_in_span, split_at, split_interval
from granular.services.reservations import (
    InvalidWallet,
    booking_of,
    checksum_wallet,
    covered_until_of,
    energy_in_span,
    status_of,
)

CHECKSUMMED = "0x52908400098527886E0F7030069857D2E4169EE7"
START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 7, 1, tzinfo=UTC)
T = datetime(2026, 3, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
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
    assert (
        closed_at(end=found.end, ended_at=found.ended_at, completed_at=found.completed_at, now=now)
        == closed
    )


# --- covered periods ----------------------------------------------------------------------


def test_each_device_covers_until_its_release_and_a_re_added_one_the_longer() -> None:
    found = reservation(
        Stint(1, START, None),
        Stint(2, START, T),
        Stint(3, START, T),
        Stint(3, T + HOUR, None),
    )
    assert covered_until_of(found) == {1: END, 2: T, 3: END}
    ended = replace(found, ended_at=T + 2 * HOUR)
    assert covered_until_of(ended) == {1: T + 2 * HOUR, 2: T, 3: T + 2 * HOUR}


# --- energy in a covered period -----------------------------------------------------------


def interval(start: datetime, end: datetime, energy_wh: int) -> EnergyInterval:
    return EnergyInterval("3", start, end, energy_wh)


@pytest.mark.parametrize(
    ("piece", "expected_wh"),
    [
        # 90 min across START, 60 min inside: 6_667.33 Wh; the piece before has the larger
        # remainder (60 of 90 against 30) and takes the odd Wh.
        (interval(START - 30 * MINUTE, START + HOUR, 10_001), 6_667),
        # 30 min inside: 3_333.67 Wh, its remainder is the larger: it takes the odd Wh.
        (interval(START - HOUR, START + 30 * MINUTE, 10_001), 3_334),
        # Equal halves, equal remainders: the earlier piece (inside) takes the odd Wh.
        (interval(END - HOUR, END + HOUR, 10_001), 5_001),
        (interval(START - HOUR, START + HOUR, 10_001), 5_000),
        (interval(START - HOUR, END + HOUR, 7), 7),
        (interval(START - HOUR, START, 9_000), 0),
        (interval(END, END + HOUR, 9_000), 0),
        (interval(START, START + HOUR, 9_000), 9_000),
        (interval(START - HOUR, START + SECOND, 0), 0),
    ],
    ids=[
        "across-start-rounds-down",
        "across-start-rounds-up",
        "across-end-tie-to-earlier",
        "across-start-tie-to-earlier",
        "across-both",
        "ends-at-start",
        "starts-at-end",
        "inside",
        "zero-energy",
    ],
)
def test_the_share_of_an_interval_in_a_period(piece: EnergyInterval, expected_wh: int) -> None:
    assert share_in_span(piece, START, END) == expected_wh


def test_an_interval_across_both_ends_is_cut_in_three_by_largest_remainder() -> None:
    """1 s before START, 1 s inside, 1 s after (END = START + 1 s here): 10 Wh over 3 s
    is 3.33 Wh each; the Wh left over goes to the earliest piece."""
    end = START + SECOND
    piece = interval(START - SECOND, end + SECOND, 10)
    assert [p.energy_wh for p in split_at(piece, [end, START])] == [4, 3, 3]
    assert share_in_span(piece, START, end) == 3


def test_the_energy_in_a_span_adds_the_shares_to_the_whole_intervals() -> None:
    found = SpanEnergy(
        inside_wh=1_000,
        straddling=(
            interval(START - HOUR, START + HOUR, 10_001),
            interval(END - HOUR, END + 3 * HOUR, 400),
        ),
    )
    assert energy_in_span(found, START, END) == 1_000 + 5_000 + 100


_MOMENTS = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)


@given(
    hour=_MOMENTS,
    hours=st.integers(1, 4),
    before_us=st.integers(1, 3_600_000_000),
    after_us=st.integers(1, 3_600_000_000),
    energy_wh=st.integers(0, 10**12),
)
@settings(max_examples=200, deadline=None)
def test_cuts_on_window_boundaries_share_as_split_interval_does(
    hour: datetime, hours: int, before_us: int, after_us: int, energy_wh: int
) -> None:
    first = hour.replace(minute=0, second=0, microsecond=0)
    last = first + hours * HOUR
    piece = interval(first - before_us * MICROSECOND, last + after_us * MICROSECOND, energy_wh)
    boundaries = [first + n * HOUR for n in range(hours + 1)]
    by_windows = [part.interval for part in split_interval(piece, Frequency.HOURLY)]
    assert split_at(piece, boundaries) == by_windows
    if hours == 1:  # the period is one window: its share is that window's part
        assert share_in_span(piece, first, last) == by_windows[1].energy_wh


@given(
    hour=_MOMENTS,
    before_us=st.integers(1, 3_600_000_000),
    after_us=st.integers(1, 3_600_000_000),
    energy_wh=st.integers(0, 10**12),
)
@settings(max_examples=200, deadline=None)
def test_a_single_cut_at_an_hour_shares_as_split_interval_does(
    hour: datetime, before_us: int, after_us: int, energy_wh: int
) -> None:
    cut = hour.replace(minute=0, second=0, microsecond=0)
    piece = interval(cut - before_us * MICROSECOND, cut + after_us * MICROSECOND, energy_wh)
    before, after = (part.interval.energy_wh for part in split_interval(piece, Frequency.HOURLY))
    assert share_in_span(piece, cut - timedelta(days=1), cut) == before
    assert share_in_span(piece, cut, cut + timedelta(days=1)) == after


@given(
    start=_MOMENTS,
    spans_us=st.lists(st.integers(1, 10**10), min_size=1, max_size=5),
    energy_wh=st.integers(0, 10**12),
)
@settings(max_examples=200, deadline=None)
def test_the_pieces_of_an_interval_sum_to_it(
    start: datetime, spans_us: list[int], energy_wh: int
) -> None:
    bounds = [start]
    for span_us in spans_us:
        bounds.append(bounds[-1] + span_us * MICROSECOND)
    piece = interval(bounds[0], bounds[-1], energy_wh)
    pieces = split_at(piece, bounds[1:-1])
    assert [(p.start, p.end) for p in pieces] == list(pairwise(bounds))
    assert sum(p.energy_wh for p in pieces) == energy_wh
    assert all(p.energy_wh >= 0 for p in pieces)
