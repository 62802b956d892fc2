"""Energy intervals and the max-energy plausibility check.

Every meter read becomes an `EnergyInterval` (`[start, end)`, whole Wh, one device).
Each interval is checked against what the device could have produced *in that
interval* (never since onboarding):

- the physical bound, always: ``capacity_w × hours`` (nothing produces more than
  nameplate), checked exactly as ``energy_wh × 3600 ≤ capacity_w × seconds``;
- the D-REC yield rule, the default policy:
  ``capacity × hours × yield / 8760 × (1 − degradation)^age × (1 + margin)``, with yield
  in kWh/kW/year (= Wh/W/year; from the device, else the policy default 1500),
  degradation 0.5 %/year, margin 0.2 and age in years since commissioning, measured at the
  interval's start (a year is 365 days = 8760 h, as in ``yield / 8760``; an interval
  before commissioning has age 0).

The literal product in the original D-REC notes (``capacity × hours × age ×
degradation × yield``) is zero in a device's first year and unbounded later; it is not
used. Bounds are whole Wh, rounded down (every intermediate step rounds down, so the
bound never exceeds the exact value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from enum import StrEnum

from granular.domain.units import NegativeValue, RuleViolation, to_utc
from granular.errors import ConfigurationError

_MICROSECOND = timedelta(microseconds=1)
_US_PER_HOUR = 3600 * 1_000_000
_HOURS_PER_YEAR = 8760
_US_PER_YEAR = _HOURS_PER_YEAR * _US_PER_HOUR
# Every step rounds toward −∞ with ample precision: the computed bound is <= the exact one.
_FLOOR = Context(prec=60, rounding=ROUND_FLOOR)


class ReadRejected(RuleViolation):
    """A meter read broke a rule; it is rejected, the other reads of its request go on."""

    code = "read_rejected"


class EnergyExceedsBound(ReadRejected):
    code = "energy_exceeds_bound"

    def __init__(self, device: str, energy_wh: int, bound_wh: int, rule: str) -> None:
        super().__init__(
            f"{device}: {energy_wh} Wh exceeds the {rule} bound of {bound_wh} Wh",
            {"device": device, "energy_wh": energy_wh, "bound_wh": bound_wh, "rule": rule},
        )
        self.device = device
        self.energy_wh = energy_wh
        self.bound_wh = bound_wh
        self.rule = rule


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
            {"device": device, "field": "capacity_w", "value": capacity_w},
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


class InvalidMaxEnergyPolicy(ConfigurationError):
    code = "invalid_max_energy_policy"

    def __init__(self, field: str, value: object, rule: str) -> None:
        super().__init__(f"max-energy policy: {field}={value} breaks: {rule}")
        self.field = field
        self.value = value
        self.rule = rule


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


def drec_bound_wh(
    profile: DeviceProfile, start: datetime, end: datetime, policy: MaxEnergyPolicy
) -> int:
    """D-REC yield bound over `[start, end)`, whole Wh rounded down (see module docstring)."""
    age = device_age_years(profile.commissioning_date, start)
    return _drec_bound_wh(profile, _microseconds(end - start), age, policy)


def _drec_bound_wh(
    profile: DeviceProfile, duration_us: int, age: Decimal, policy: MaxEnergyPolicy
) -> int:
    yield_ = profile.yield_kwh_per_kw_year
    if yield_ is None:
        yield_ = policy.default_yield_kwh_per_kw_year
    retained = Decimal(1) - policy.degradation_per_year
    ctx = _FLOOR
    # capacity_w × hours × yield / 8760, hours = µs / 3.6e9: one exact numerator, one division.
    numerator = ctx.multiply(
        ctx.multiply(Decimal(profile.capacity_w * duration_us), yield_),
        Decimal(1) + policy.margin,
    )
    base = ctx.divide(numerator, Decimal(_US_PER_HOUR * _HOURS_PER_YEAR))
    factor = Decimal(1) if age == 0 or retained == 1 else ctx.power(retained, age)
    return int(ctx.multiply(base, factor).to_integral_value(rounding=ROUND_FLOOR))


def check_max_energy(
    interval: EnergyInterval, profile: DeviceProfile, policy: MaxEnergyPolicy
) -> None:
    """Raise `EnergyExceedsBound` if `interval` breaks the physical bound or the policy's rule.

    The physical bound is checked first (exactly: energy_wh × 3600 ≤ capacity_w × seconds),
    so when both fail the error names "physical".
    """
    energy_wh = interval.energy_wh
    duration_us = _microseconds(interval.end - interval.start)
    if energy_wh * _US_PER_HOUR > profile.capacity_w * duration_us:
        raise EnergyExceedsBound(
            interval.device,
            energy_wh,
            physical_bound_wh(profile.capacity_w, interval.start, interval.end),
            MaxEnergyRule.PHYSICAL.value,
        )
    if policy.name is not MaxEnergyRule.DREC:
        return
    age = device_age_years(profile.commissioning_date, interval.start)
    whole_years = age.to_integral_value(rounding=ROUND_CEILING)
    # Fast path: (1 − d)^ceil(age) <= (1 − d)^age, and an integer power is cheap. Only when
    # the energy is above that lower bound is the fractional power computed.
    if whole_years != age and energy_wh <= _drec_bound_wh(
        profile, duration_us, whole_years, policy
    ):
        return
    bound_wh = _drec_bound_wh(profile, duration_us, age, policy)
    if energy_wh > bound_wh:
        raise EnergyExceedsBound(interval.device, energy_wh, bound_wh, MaxEnergyRule.DREC.value)
