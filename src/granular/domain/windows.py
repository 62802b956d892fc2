"""Calendar windows in UTC, and splitting an energy interval across them.

A window is one issuance period of a reservation: `[start, end)`, calendar-aligned in
UTC. Hours and days are what they say; weeks start Monday 00:00; months and quarters are
calendar months and quarters (January, April, July, October), not 30 or 91 days.

`split_interval` shares an interval's energy between the windows it overlaps in
proportion to time (to the microsecond). Integer Wh are handed out by largest remainder,
so the parts sum exactly to the whole; among equal remainders the earlier window gets the
extra Wh first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import pairwise

from granular.domain.energy import EnergyInterval
from granular.domain.units import RuleViolation, shift_months, to_utc

_MICROSECOND = timedelta(microseconds=1)


class Frequency(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"


class UnknownFrequency(RuleViolation):
    code = "unknown_frequency"

    def __init__(self, value: object) -> None:
        allowed = ", ".join(f.value for f in Frequency)
        super().__init__(
            f"frequency: {value!r} is not one of {allowed}",
            {"field": "frequency", "value": repr(value), "allowed": allowed},
        )
        self.value = value


def parse_frequency(value: Frequency | str) -> Frequency:
    """`Frequency` from its name ("hourly", ..., "quarterly")."""
    try:
        return Frequency(value)
    except ValueError:
        raise UnknownFrequency(value) from None


@dataclass(frozen=True, slots=True)
class Window:
    """One calendar window `[start, end)` of `frequency`, UTC."""

    frequency: Frequency
    start: datetime
    end: datetime

    def contains(self, t: datetime) -> bool:
        return self.start <= t < self.end

    def next(self) -> Window:
        """The window right after this one."""
        return window_containing(self.frequency, self.end)


@dataclass(frozen=True, slots=True)
class WindowPart:
    """The share of an interval that falls in `window` (`interval` lies inside it)."""

    window: Window
    interval: EnergyInterval


def window_containing(frequency: Frequency, t: datetime) -> Window:
    """The window of `frequency` that contains instant `t` (timezone-aware)."""
    t = to_utc(t, field="t")
    if frequency is Frequency.HOURLY:
        start = t.replace(minute=0, second=0, microsecond=0)
        return Window(frequency, start, start + timedelta(hours=1))
    midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if frequency is Frequency.DAILY:
        return Window(frequency, midnight, midnight + timedelta(days=1))
    if frequency is Frequency.WEEKLY:
        start = midnight - timedelta(days=midnight.weekday())
        return Window(frequency, start, start + timedelta(days=7))
    first = midnight.replace(day=1)
    if frequency is Frequency.MONTHLY:
        return Window(frequency, first, shift_months(first, 1))
    if frequency is Frequency.QUARTERLY:
        start = first.replace(month=(first.month - 1) // 3 * 3 + 1)
        return Window(frequency, start, shift_months(start, 3))
    raise AssertionError(f"unhandled frequency {frequency!r}")  # pragma: no cover


def iter_windows(frequency: Frequency, start: datetime, end: datetime) -> Iterator[Window]:
    """Windows of `frequency` that overlap `[start, end)`, in order; none if start >= end.

    The first and last windows may stick out of `[start, end)`.
    """
    start = to_utc(start, field="start")
    end = to_utc(end, field="end")
    if start >= end:
        return
    window = window_containing(frequency, start)
    while window.start < end:
        yield window
        window = window.next()


def windows_between(frequency: Frequency, start: datetime, end: datetime) -> list[Window]:
    """List form of `iter_windows`."""
    return list(iter_windows(frequency, start, end))


def split_interval(interval: EnergyInterval, frequency: Frequency) -> list[WindowPart]:
    """Split `interval` over the windows it overlaps, in proportion to time, exactly.

    One part per overlapped window, in window order (a part may hold 0 Wh). Each part's
    interval is the overlap of `interval` and its window; the parts' `energy_wh` sum to
    `interval.energy_wh`.
    """
    windows = windows_between(frequency, interval.start, interval.end)
    pieces = split_at(interval, (window.start for window in windows[1:]))
    return [WindowPart(window, piece) for window, piece in zip(windows, pieces, strict=True)]


def split_at(interval: EnergyInterval, cuts: Iterable[datetime]) -> list[EnergyInterval]:
    """`interval` cut at the instants of `cuts` that fall inside it, its energy shared
    between the pieces exactly as `domain.windows.split_interval` shares it between
    windows: in proportion to time (to the microsecond), whole Wh handed out by largest
    remainder, the earlier piece first among equal remainders. The pieces, in order, sum
    to `energy_wh`."""
    inner = sorted({t for t in cuts if interval.start < t < interval.end})
    spans = list(pairwise([interval.start, *inner, interval.end]))
    total_us = (interval.end - interval.start) // _MICROSECOND
    floors: list[int] = []
    remainders: list[int] = []
    for piece_start, piece_end in spans:
        share, remainder = divmod(
            interval.energy_wh * ((piece_end - piece_start) // _MICROSECOND), total_us
        )
        floors.append(share)
        remainders.append(remainder)
    missing_wh = interval.energy_wh - sum(floors)
    for index in sorted(range(len(spans)), key=lambda i: -remainders[i])[:missing_wh]:
        floors[index] += 1
    return [
        EnergyInterval(interval.device, piece_start, piece_end, energy_wh)
        for (piece_start, piece_end), energy_wh in zip(spans, floors, strict=True)
    ]


def share_in_span(interval: EnergyInterval, start: datetime, end: datetime) -> int:
    """The Wh of `interval` that fall in `[start, end)`: the pieces inside it once the
    interval is cut at `start` and `end` (`split_at`)."""
    return sum(
        piece.energy_wh
        for piece in split_at(interval, (start, end))
        if start <= piece.start and piece.end <= end
    )
