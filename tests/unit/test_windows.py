"""Calendar windows in UTC and the exact, proportional split of an interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from granular.domain.energy import EnergyInterval
from granular.domain.units import NaiveTimestamp
from granular.domain.windows import (
    Frequency,
    UnknownFrequency,
    Window,
    parse_frequency,
    split_interval,
    window_containing,
    windows_between,
)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# Wednesday 15 May 2024, 13:45:30.5 at +02:00 = 11:45:30.5 UTC.
SAMPLE = datetime(2024, 5, 15, 13, 45, 30, 500000, tzinfo=timezone(timedelta(hours=2)))


@pytest.mark.parametrize(
    ("frequency", "t", "start", "end"),
    [
        (Frequency.HOURLY, SAMPLE, utc(2024, 5, 15, 11), utc(2024, 5, 15, 12)),
        (Frequency.DAILY, SAMPLE, utc(2024, 5, 15), utc(2024, 5, 16)),
        (Frequency.WEEKLY, SAMPLE, utc(2024, 5, 13), utc(2024, 5, 20)),
        (Frequency.MONTHLY, SAMPLE, utc(2024, 5, 1), utc(2024, 6, 1)),
        (Frequency.QUARTERLY, SAMPLE, utc(2024, 4, 1), utc(2024, 7, 1)),
        # Local midnight on New Year at +01:00 is still 31 December in UTC.
        (
            Frequency.DAILY,
            datetime(2024, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
            utc(2023, 12, 31),
            utc(2024, 1, 1),
        ),
        (Frequency.WEEKLY, utc(2025, 1, 1), utc(2024, 12, 30), utc(2025, 1, 6)),
        (Frequency.WEEKLY, utc(2024, 5, 19, 23, 59, 59), utc(2024, 5, 13), utc(2024, 5, 20)),
        (Frequency.MONTHLY, utc(2024, 2, 29, 23), utc(2024, 2, 1), utc(2024, 3, 1)),
        (Frequency.MONTHLY, utc(2024, 12, 31, 23), utc(2024, 12, 1), utc(2025, 1, 1)),
        (Frequency.QUARTERLY, utc(2024, 12, 31, 23, 59, 59), utc(2024, 10, 1), utc(2025, 1, 1)),
        (Frequency.QUARTERLY, utc(2024, 3, 31, 23), utc(2024, 1, 1), utc(2024, 4, 1)),
    ],
    ids=[
        "hourly",
        "daily",
        "weekly-starts-monday",
        "monthly",
        "quarterly",
        "daily-utc-not-local",
        "weekly-across-new-year",
        "weekly-sunday-night",
        "monthly-leap-february",
        "monthly-december",
        "quarterly-q4",
        "quarterly-q1-end",
    ],
)
def test_window_containing(
    frequency: Frequency, t: datetime, start: datetime, end: datetime
) -> None:
    assert window_containing(frequency, t) == Window(frequency, start, end)


@pytest.mark.parametrize("frequency", list(Frequency), ids=[f.value for f in Frequency])
def test_window_start_is_inclusive_and_end_exclusive(frequency: Frequency) -> None:
    window = window_containing(frequency, SAMPLE)
    assert window_containing(frequency, window.start) == window
    assert window_containing(frequency, window.end) == window.next()
    assert window_containing(frequency, window.end - timedelta(microseconds=1)) == window


def test_naive_instant_rejected() -> None:
    with pytest.raises(NaiveTimestamp):
        window_containing(Frequency.DAILY, datetime(2024, 1, 1))


@pytest.mark.parametrize(
    ("frequency", "count"),
    [
        (Frequency.HOURLY, 366 * 24),
        (Frequency.DAILY, 366),
        (Frequency.WEEKLY, 53),  # 1 Jan 2024 is a Monday; 30 Dec 2024 starts the 53rd
        (Frequency.MONTHLY, 12),
        (Frequency.QUARTERLY, 4),
    ],
    ids=[f.value for f in Frequency],
)
def test_windows_of_leap_year_2024(frequency: Frequency, count: int) -> None:
    windows = windows_between(frequency, utc(2024, 1, 1), utc(2025, 1, 1))
    assert len(windows) == count
    assert windows[0].start == utc(2024, 1, 1)


@pytest.mark.parametrize(
    ("start", "end"),
    [(utc(2024, 1, 1), utc(2024, 1, 1)), (utc(2024, 1, 2), utc(2024, 1, 1))],
    ids=["empty", "reversed"],
)
def test_no_windows_for_empty_range(start: datetime, end: datetime) -> None:
    assert windows_between(Frequency.DAILY, start, end) == []


def test_parse_frequency() -> None:
    assert parse_frequency("weekly") is Frequency.WEEKLY
    with pytest.raises(UnknownFrequency):
        parse_frequency("fortnightly")


# --- split ------------------------------------------------------------------------------


def split_energies(
    start: datetime, end: datetime, energy_wh: int, frequency: Frequency
) -> list[int]:
    parts = split_interval(EnergyInterval("dev-1", start, end, energy_wh), frequency)
    return [p.interval.energy_wh for p in parts]


@pytest.mark.parametrize(
    ("start", "end", "energy_wh", "expected"),
    [
        (utc(2024, 1, 1, 10, 30), utc(2024, 1, 1, 12, 30), 1000, [250, 500, 250]),
        (utc(2024, 1, 1, 10), utc(2024, 1, 1, 13), 10, [4, 3, 3]),  # tie: earliest first
        (utc(2024, 1, 1, 10), utc(2024, 1, 1, 12), 1, [1, 0]),
        (utc(2024, 1, 1, 10, 40), utc(2024, 1, 1, 11, 20), 5, [3, 2]),  # 2.5 / 2.5: tie
        (utc(2024, 1, 1, 10, 50), utc(2024, 1, 1, 11, 50), 6, [1, 5]),
        # 2.857… and 7.142…: the larger remainder (the first part) gets the extra Wh.
        (utc(2024, 1, 1, 10, 40), utc(2024, 1, 1, 11, 50), 10, [3, 7]),
        # 7.142… and 2.857…: now the second part has the larger remainder.
        (utc(2024, 1, 1, 10, 10), utc(2024, 1, 1, 11, 20), 10, [7, 3]),
        (utc(2024, 1, 1, 10), utc(2024, 1, 1, 11), 7, [7]),
        (utc(2024, 1, 1, 10), utc(2024, 1, 1, 12), 0, [0, 0]),
    ],
    ids=[
        "quarter-half-quarter",
        "thirds-tie",
        "one-wh-two-hours",
        "halves-tie",
        "sixths",
        "largest-remainder-first",
        "largest-remainder-second",
        "inside",
        "zero",
    ],
)
def test_split_examples(
    start: datetime, end: datetime, energy_wh: int, expected: list[int]
) -> None:
    assert split_energies(start, end, energy_wh, Frequency.HOURLY) == expected


def test_split_monthly_is_proportional_to_calendar_time() -> None:
    # 29 days of February 2024 and 31 of March: 60 days; 6000 Wh → 2900 + 3100.
    assert split_energies(utc(2024, 2, 1), utc(2024, 4, 1), 6000, Frequency.MONTHLY) == [
        2900,
        3100,
    ]


def test_split_part_lies_in_its_window_and_keeps_device() -> None:
    parts = split_interval(
        EnergyInterval("dev-9", utc(2024, 3, 31, 22), utc(2024, 4, 1, 2), 400), Frequency.QUARTERLY
    )
    assert [(p.window.start, p.interval.start, p.interval.end) for p in parts] == [
        (utc(2024, 1, 1), utc(2024, 3, 31, 22), utc(2024, 4, 1)),
        (utc(2024, 4, 1), utc(2024, 4, 1), utc(2024, 4, 1, 2)),
    ]
    assert {p.interval.device for p in parts} == {"dev-9"}


_MAX_SPAN = {
    Frequency.HOURLY: timedelta(days=10),
    Frequency.DAILY: timedelta(days=200),
    Frequency.WEEKLY: timedelta(days=3 * 365),
    Frequency.MONTHLY: timedelta(days=3 * 365),
    Frequency.QUARTERLY: timedelta(days=3 * 365),
}


@st.composite
def intervals(draw: st.DrawFn) -> tuple[EnergyInterval, Frequency]:
    frequency = draw(st.sampled_from(Frequency))
    start = draw(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1))
    ).replace(tzinfo=UTC)
    span_us = draw(st.integers(1, _MAX_SPAN[frequency] // timedelta(microseconds=1)))
    energy_wh = draw(st.integers(0, 10**15))
    end = start + timedelta(microseconds=span_us)
    return EnergyInterval("dev-1", start, end, energy_wh), frequency


@given(intervals())
@settings(max_examples=200, deadline=None)
def test_split_conserves_energy_exactly(case: tuple[EnergyInterval, Frequency]) -> None:
    interval, frequency = case
    parts = split_interval(interval, frequency)
    assert sum(p.interval.energy_wh for p in parts) == interval.energy_wh
    assert all(p.interval.energy_wh >= 0 for p in parts)
    # Parts lie inside their windows and tile the interval without gaps or overlaps.
    for part in parts:
        assert part.window.start <= part.interval.start < part.interval.end <= part.window.end
        assert part.window == window_containing(frequency, part.interval.start)
    assert parts[0].interval.start == interval.start
    assert parts[-1].interval.end == interval.end
    for before, after in pairwise(parts):
        assert before.interval.end == after.interval.start == after.window.start
    # Largest remainder: every part is its exact share rounded down or up, and a part
    # rounded up never has a smaller remainder than a part rounded down.
    total_us = (interval.end - interval.start) // timedelta(microseconds=1)
    rounded_up: list[Fraction] = []
    rounded_down: list[Fraction] = []
    for part in parts:
        part_us = (part.interval.end - part.interval.start) // timedelta(microseconds=1)
        exact = Fraction(interval.energy_wh * part_us, total_us)
        remainder = exact - int(exact)
        assert part.interval.energy_wh - int(exact) in (0, 1)
        (rounded_up if part.interval.energy_wh > exact else rounded_down).append(remainder)
    if rounded_up and rounded_down:
        assert min(rounded_up) >= max(rounded_down)


@given(
    frequency=st.sampled_from(Frequency),
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)),
    span_days=st.integers(0, 800),
)
@settings(max_examples=100, deadline=None)
def test_windows_between_are_contiguous_and_aligned(
    frequency: Frequency, start: datetime, span_days: int
) -> None:
    begin = start.replace(tzinfo=UTC)
    end = begin + timedelta(days=span_days, seconds=1)
    if frequency is Frequency.HOURLY:
        end = begin + timedelta(hours=span_days, seconds=1)
    windows = windows_between(frequency, begin, end)
    assert windows[0].contains(begin)
    assert windows[-1].start < end <= windows[-1].end
    for before, after in pairwise(windows):
        assert before.end == after.start
    for window in windows:
        assert window.start.tzinfo is UTC
        assert (window.start.minute, window.start.second, window.start.microsecond) == (0, 0, 0)
        if frequency is not Frequency.HOURLY:
            assert window.start.hour == 0
        if frequency is Frequency.WEEKLY:
            assert window.start.weekday() == 0
        if frequency in (Frequency.MONTHLY, Frequency.QUARTERLY):
            assert window.start.day == 1
        if frequency is Frequency.QUARTERLY:
            assert window.start.month in (1, 4, 7, 10)
