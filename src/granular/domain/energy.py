"""Energy intervals and the max-energy plausibility check (DESIGN.md §4).

Every meter read becomes an `EnergyInterval` (`[start, end)`, whole Wh, one device).
`check_max_energy` runs two checks, in this order:

1. the physical bound, per interval, always: ``capacity_w × hours`` (nothing produces more
   than nameplate; for a consumption meter, its connection capacity), checked exactly as
   ``energy_wh × 3600 ≤ capacity_w × seconds``;
2. the D-REC yield rule, the default policy, for production devices only (it is a
   production yield; a consumption meter gets the physical bound alone): the energy of the
   device's intervals in the 365 days ending at the new interval's end, the new interval
   included, must not exceed ``capacity × yield × (1 − degradation)^age × (1 + margin)``,
   with yield in kWh/kW/year (= Wh/W/year; from the device, else the policy default 1500),
   degradation 0.5 %/year, margin 0.2 and age in years (of 365 days) from commissioning to
   the interval's end (0 before commissioning). An interval that starts before the window
   counts by its time-proportional share, rounded down. `TrailingYear` holds what is known
   of that year: what was stored before the request and what the request accepted so far.

The yield rule bounds a year's output, so it is never applied to a short interval alone:
one sunny noon hour at 80 % of nameplate passes, a year of such hours does not. The
literal product in the original D-REC notes (``capacity × hours × age × degradation ×
yield``) is zero in a device's first year and unbounded later; it is not used. Bounds are
whole Wh, rounded down (every intermediate step rounds down, so the bound never exceeds
the exact value).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_FLOOR, Context, Decimal
from enum import StrEnum
from functools import lru_cache
from itertools import accumulate

from granular.domain.devices import DeviceKind
from granular.domain.units import NegativeValue, RuleViolation, to_utc
from granular.errors import ConfigurationError, FieldRuleError, GranularError

_MICROSECOND = timedelta(microseconds=1)
_US_PER_HOUR = 3600 * 1_000_000
_HOURS_PER_YEAR = 8760
_US_PER_YEAR = _HOURS_PER_YEAR * _US_PER_HOUR
YIELD_WINDOW = timedelta(days=365)
# Every step rounds toward −∞ with ample precision: the computed bound is <= the exact one.
_FLOOR = Context(prec=60, rounding=ROUND_FLOOR)


class ReadRejected(RuleViolation):
    """A meter read broke a rule; it is rejected, the other reads of its request go on."""

    code = "read_rejected"


class EnergyExceedsBound(ReadRejected):
    """`energy_wh` is over `bound_wh` under `rule`. For "physical" both are the interval's;
    for "drec" both are the trailing year's (`window_start`..`window_end`), and
    `interval_wh` is the new interval's own energy."""

    code = "energy_exceeds_bound"

    def __init__(
        self,
        device: str,
        energy_wh: int,
        bound_wh: int,
        rule: str,
        *,
        window: tuple[datetime, datetime] | None = None,
        interval_wh: int | None = None,
    ) -> None:
        details: dict[str, object] = {
            "device": device,
            "energy_wh": energy_wh,
            "bound_wh": bound_wh,
            "rule": rule,
        }
        where = ""
        if window is not None:
            where = f" in the 365 days [{window[0].isoformat()}, {window[1].isoformat()})"
            details.update(
                window_start=window[0].isoformat(),
                window_end=window[1].isoformat(),
                interval_wh=interval_wh,
            )
        super().__init__(
            f"{device}: {energy_wh} Wh{where} exceeds the {rule} bound of {bound_wh} Wh",
            details,
        )
        self.device = device
        self.energy_wh = energy_wh
        self.bound_wh = bound_wh
        self.rule = rule
        self.window = window
        self.interval_wh = interval_wh


class IntervalNotPositive(RuleViolation):
    code = "interval_not_positive"

    def __init__(self, device: str, start: datetime, end: datetime) -> None:
        super().__init__(
            f"{device}: interval start {start.isoformat()} is not before end {end.isoformat()}",
            {"device": device, "start": start.isoformat(), "end": end.isoformat()},
        )
        self.device = device
        self.start = start
        self.end = end


class CapacityNotPositive(RuleViolation):
    code = "capacity_not_positive"

    def __init__(self, device: str, capacity_w: int) -> None:
        super().__init__(
            f"{device}: capacity_w {capacity_w} must be a positive integer of W",
            {"device": device, "field": "capacity", "value": capacity_w},
        )
        self.device = device
        self.capacity_w = capacity_w


class YieldNotPositive(RuleViolation):
    code = "yield_not_positive"

    def __init__(self, device: str, yield_kwh_per_kw_year: Decimal) -> None:
        super().__init__(
            f"{device}: yield_kwh_per_kw_year {yield_kwh_per_kw_year} must be positive",
            {
                "device": device,
                "field": "yield_kwh_per_kw_year",
                "value": str(yield_kwh_per_kw_year),
            },
        )
        self.device = device
        self.yield_kwh_per_kw_year = yield_kwh_per_kw_year


class InvalidMaxEnergyPolicy(FieldRuleError, ConfigurationError):
    code = "invalid_max_energy_policy"
    subject = "max-energy policy "


@dataclass(frozen=True, slots=True)
class EnergyInterval:
    """`energy_wh` produced (or consumed) by `device` in `[start, end)`, UTC."""

    device: str
    start: datetime
    end: datetime
    energy_wh: int

    def __post_init__(self) -> None:
        start = to_utc(self.start, field="start")
        end = to_utc(self.end, field="end")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        if start >= end:
            raise IntervalNotPositive(self.device, start, end)
        if self.energy_wh < 0:
            raise NegativeValue("energy_wh", self.energy_wh)

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


class MaxEnergyRule(StrEnum):
    PHYSICAL = "physical"
    DREC = "drec"


@dataclass(frozen=True, slots=True)
class MaxEnergyPolicy:
    """Which max-energy rule applies, and its parameters. The physical bound always applies.

    `name`: "drec" (default) adds the D-REC yield rule; "physical" checks nameplate only.
    `default_yield_kwh_per_kw_year`: used when the device has none. `degradation_per_year`
    and `margin` are ratios (0.005 = 0.5 %).
    """

    name: MaxEnergyRule = MaxEnergyRule.DREC
    default_yield_kwh_per_kw_year: Decimal = field(default_factory=lambda: Decimal(1500))
    degradation_per_year: Decimal = field(default_factory=lambda: Decimal("0.005"))
    margin: Decimal = field(default_factory=lambda: Decimal("0.2"))

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "name", MaxEnergyRule(self.name))
        except ValueError:
            allowed = ", ".join(r.value for r in MaxEnergyRule)
            raise InvalidMaxEnergyPolicy("name", self.name, f"one of {allowed}") from None
        for name in ("default_yield_kwh_per_kw_year", "degradation_per_year", "margin"):
            value = getattr(self, name)
            if isinstance(value, bool | float) or not isinstance(value, Decimal | int):
                raise InvalidMaxEnergyPolicy(name, value, "an exact Decimal")
            object.__setattr__(self, name, Decimal(value))
        if not self.default_yield_kwh_per_kw_year > 0:
            raise InvalidMaxEnergyPolicy(
                "default_yield_kwh_per_kw_year", self.default_yield_kwh_per_kw_year, "> 0"
            )
        if not 0 <= self.degradation_per_year < 1:
            raise InvalidMaxEnergyPolicy(
                "degradation_per_year", self.degradation_per_year, "0 <= degradation < 1"
            )
        if not self.margin >= 0:
            raise InvalidMaxEnergyPolicy("margin", self.margin, ">= 0")


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """What the max-energy rules need to know about a device."""

    device: str
    capacity_w: int
    commissioning_date: datetime
    yield_kwh_per_kw_year: Decimal | None = None
    kind: DeviceKind = DeviceKind.PRODUCTION

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "commissioning_date",
            to_utc(self.commissioning_date, field="commissioning_date"),
        )
        if isinstance(self.capacity_w, bool) or self.capacity_w <= 0:
            raise CapacityNotPositive(self.device, self.capacity_w)
        if self.yield_kwh_per_kw_year is not None and not self.yield_kwh_per_kw_year > 0:
            raise YieldNotPositive(self.device, self.yield_kwh_per_kw_year)


def _microseconds(duration: timedelta) -> int:
    return duration // _MICROSECOND


def physical_bound_wh(capacity_w: int, start: datetime, end: datetime) -> int:
    """Nameplate energy over `[start, end)`: floor(capacity_w × hours), whole Wh."""
    return capacity_w * _microseconds(end - start) // _US_PER_HOUR


def device_age_years(commissioning_date: datetime, at: datetime) -> Decimal:
    """Years (of 365 days) from commissioning to `at`; 0 before commissioning."""
    elapsed_us = _microseconds(at - commissioning_date)
    if elapsed_us <= 0:
        return Decimal(0)
    return _FLOOR.divide(Decimal(elapsed_us), Decimal(_US_PER_YEAR))


def yearly_yield_bound_wh(profile: DeviceProfile, at: datetime, policy: MaxEnergyPolicy) -> int:
    """D-REC yield bound for the 365 days ending at `at`, whole Wh rounded down:
    capacity_w × yield × (1 − degradation)^age × (1 + margin), age at `at`."""
    age = device_age_years(profile.commissioning_date, at)
    return _yield_bound_wh(profile.capacity_w, _yield_of(profile, policy), age, policy)


def _yield_of(profile: DeviceProfile, policy: MaxEnergyPolicy) -> Decimal:
    if profile.yield_kwh_per_kw_year is None:
        return policy.default_yield_kwh_per_kw_year
    return profile.yield_kwh_per_kw_year


@lru_cache(maxsize=4096)
def _yield_bound_wh(
    capacity_w: int, yield_kwh_per_kw_year: Decimal, age: Decimal, policy: MaxEnergyPolicy
) -> int:
    retained = Decimal(1) - policy.degradation_per_year
    ctx = _FLOOR
    base = ctx.multiply(
        ctx.multiply(Decimal(capacity_w), yield_kwh_per_kw_year), Decimal(1) + policy.margin
    )
    factor = Decimal(1) if age == 0 or retained == 1 else ctx.power(retained, age)
    return int(ctx.multiply(base, factor).to_integral_value(rounding=ROUND_FLOOR))


def share_wh(interval: EnergyInterval, start: datetime, end: datetime) -> int:
    """The time-proportional share of `interval` inside `[start, end)`, rounded down."""
    overlap_start = max(interval.start, start)
    overlap_end = min(interval.end, end)
    if overlap_end <= overlap_start:
        return 0
    if overlap_start == interval.start and overlap_end == interval.end:
        return interval.energy_wh
    return (
        interval.energy_wh
        * _microseconds(overlap_end - overlap_start)
        // _microseconds(interval.end - interval.start)
    )


class TrailingYearNotCovered(GranularError):
    """A caller asked a `TrailingYear` about an end it was not loaded for (a bug)."""

    code = "trailing_year_not_covered"


class TrailingYear:
    """A device's energy in the 365 days ending at any `end` in `[first_end, last_end]`.

    A storage layer loads it once per request: `core_wh`, the total of the stored intervals
    lying wholly inside `core` = [last_end − 365 d, first_end) (inside every such window,
    so summed by the database), and `intervals`, every other stored interval overlapping
    [first_end − 365 d, last_end) (two edges, each as long as the request's span). Intervals
    the request accepts are `add`ed, so later reads of the same request count them. A
    device's intervals never overlap, which keeps starts and ends in the same order and
    makes `energy_wh` two bisections and a prefix-sum difference.

    `TrailingYear.nothing_stored()` covers any end: only the request's own intervals count.
    """

    __slots__ = ("_core_wh", "_covers", "_ends", "_intervals", "_prefix", "_starts")

    def __init__(
        self,
        *,
        covers: tuple[datetime, datetime] | None,
        core_wh: int = 0,
        intervals: Iterable[EnergyInterval] = (),
    ) -> None:
        self._covers = covers
        self._core_wh = core_wh
        self._intervals: list[EnergyInterval] = sorted(intervals, key=lambda i: i.start)
        self._starts = [i.start for i in self._intervals]
        self._ends = [i.end for i in self._intervals]
        self._prefix = list(accumulate((i.energy_wh for i in self._intervals), initial=0))

    @classmethod
    def nothing_stored(cls) -> TrailingYear:
        return cls(covers=None)

    @staticmethod
    def core(first_end: datetime, last_end: datetime) -> tuple[datetime, datetime]:
        """The span whose stored intervals are in every window of the request, summed by
        the database: [last_end − 365 d, first_end), empty (start == end) when the request
        spans a year or more."""
        return min(last_end - YIELD_WINDOW, first_end), first_end

    def copy(self) -> TrailingYear:
        clone = TrailingYear(covers=self._covers, core_wh=self._core_wh)
        clone._intervals = list(self._intervals)
        clone._starts = list(self._starts)
        clone._ends = list(self._ends)
        clone._prefix = list(self._prefix)
        return clone

    def add(self, interval: EnergyInterval) -> None:
        """Count `interval` (accepted in this request) from now on."""
        index = bisect_left(self._starts, interval.start)
        self._intervals.insert(index, interval)
        self._starts.insert(index, interval.start)
        self._ends.insert(index, interval.end)
        if index == len(self._intervals) - 1:
            self._prefix.append(self._prefix[-1] + interval.energy_wh)
        else:
            tail = accumulate((i.energy_wh for i in self._intervals[index:]), initial=0)
            base = self._prefix[index]
            self._prefix[index:] = [base + wh for wh in tail]

    def energy_wh(self, end: datetime) -> int:
        """Energy in [end − 365 d, end): interval shares, rounded down each."""
        if self._covers is not None and not self._covers[0] <= end <= self._covers[1]:
            raise TrailingYearNotCovered(
                f"trailing year loaded for ends {self._covers[0].isoformat()}.."
                f"{self._covers[1].isoformat()}, asked for {end.isoformat()}"
            )
        window_start = end - YIELD_WINDOW
        first = bisect_right(self._ends, window_start)
        last = bisect_left(self._starts, end)
        if last <= first:
            return self._core_wh
        total = self._core_wh + self._prefix[last] - self._prefix[first]
        for index in (first, last - 1) if last - 1 > first else (first,):
            interval = self._intervals[index]
            if interval.start < window_start or interval.end > end:
                total += share_wh(interval, window_start, end) - interval.energy_wh
        return total


def utc_day(moment: datetime) -> date:
    """The UTC calendar day `moment` falls on."""
    return to_utc(moment).date()


def energy_by_start_day(intervals: Iterable[EnergyInterval]) -> dict[date, int]:
    """The daily rollup's increments: each interval's whole energy on the UTC day it starts
    (never prorated, so a day's total is exactly the sum of whole intervals, which is what
    the core of a `TrailingYear` sums)."""
    totals: dict[date, int] = {}
    for interval in intervals:
        day = utc_day(interval.start)
        totals[day] = totals.get(day, 0) + interval.energy_wh
    return totals


@dataclass(frozen=True, slots=True)
class DaySplit:
    """A span `[start, end)` cut at UTC midnights: `days` = `[first_day, end_day)`, the whole
    days inside it (None when there is none), and `partial`, the spans left at either side,
    in time order: each shorter than a day, or, with no whole day inside, the span itself
    (on at most two calendar days)."""

    days: tuple[date, date] | None
    partial: tuple[tuple[datetime, datetime], ...]


def split_at_midnights(start: datetime, end: datetime) -> DaySplit:
    """`[start, end)` as whole UTC days and the partial spans around them. An instant on a
    midnight leaves no partial span on its side; an empty span gives nothing at all."""
    start, end = to_utc(start, field="start"), to_utc(end, field="end")
    if start >= end:
        return DaySplit(None, ())
    first = datetime.combine(start.date(), time(), UTC)
    if first < start:
        first += timedelta(days=1)
    last = datetime.combine(end.date(), time(), UTC)
    if first >= last:
        return DaySplit(None, ((start, end),))
    partial = tuple(span for span in ((start, first), (last, end)) if span[0] < span[1])
    return DaySplit((first.date(), last.date()), partial)


def check_physical(interval: EnergyInterval, profile: DeviceProfile) -> None:
    """Raise `EnergyExceedsBound` ("physical") when `interval` is over nameplate, exactly:
    energy_wh × 3600 ≤ capacity_w × seconds."""
    duration_us = _microseconds(interval.end - interval.start)
    if interval.energy_wh * _US_PER_HOUR > profile.capacity_w * duration_us:
        raise EnergyExceedsBound(
            interval.device,
            interval.energy_wh,
            physical_bound_wh(profile.capacity_w, interval.start, interval.end),
            MaxEnergyRule.PHYSICAL.value,
        )


def check_max_energy(
    interval: EnergyInterval,
    profile: DeviceProfile,
    policy: MaxEnergyPolicy,
    year: TrailingYear,
) -> None:
    """Raise `EnergyExceedsBound` if `interval` breaks the physical bound or, under the
    "drec" policy and for a production device, the yield rule over the trailing year
    (`year` holds the device's other intervals; `interval` itself is counted here).

    The physical bound is checked first, so when both fail the error names "physical".
    """
    check_physical(interval, profile)
    if policy.name is not MaxEnergyRule.DREC or profile.kind is DeviceKind.CONSUMPTION:
        return
    end = interval.end
    window_start = end - YIELD_WINDOW
    energy_wh = year.energy_wh(end) + share_wh(interval, window_start, end)
    yield_ = _yield_of(profile, policy)
    # Fast path: (1 − d)^ceil(age) <= (1 − d)^age, and the bound at a whole age is cached.
    # Only when the energy is above that lower bound is the fractional age computed.
    elapsed_us = max(_microseconds(end - profile.commissioning_date), 0)
    whole_years = Decimal(-(-elapsed_us // _US_PER_YEAR))
    if energy_wh <= _yield_bound_wh(profile.capacity_w, yield_, whole_years, policy):
        return
    age = device_age_years(profile.commissioning_date, end)
    bound_wh = _yield_bound_wh(profile.capacity_w, yield_, age, policy)
    if energy_wh > bound_wh:
        raise EnergyExceedsBound(
            interval.device,
            energy_wh,
            bound_wh,
            MaxEnergyRule.DREC.value,
            window=(window_start, end),
            interval_wh=interval.energy_wh,
        )
