"""Max-energy plausibility: physical bound and D-REC yield rule, at their edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from granular.domain.energy import (
    CapacityNotPositive,
    DeviceProfile,
    EnergyExceedsBound,
    EnergyInterval,
    IntervalNotPositive,
    InvalidMaxEnergyPolicy,
    MaxEnergyPolicy,
    MaxEnergyRule,
    check_max_energy,
    device_age_years,
    drec_bound_wh,
    physical_bound_wh,
)
from granular.domain.units import NaiveTimestamp, NegativeValue
from granular.errors import ConfigurationError, ValidationError

T0 = datetime(2024, 3, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
YEAR = timedelta(days=365)
PHYSICAL = MaxEnergyPolicy(name=MaxEnergyRule.PHYSICAL)
DREC = MaxEnergyPolicy()


def device(
    capacity_w: int = 8760, commissioned: datetime = T0, yield_: Decimal | None = Decimal(1000)
) -> DeviceProfile:
    return DeviceProfile("dev-1", capacity_w, commissioned, yield_)


def interval(energy_wh: int, duration: timedelta = HOUR, start: datetime = T0) -> EnergyInterval:
    return EnergyInterval("dev-1", start, start + duration, energy_wh)


# --- physical bound -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity_w", "duration", "bound_wh"),
    [
        (1000, HOUR, 1000),
        (1000, timedelta(seconds=36), 10),
        (1000, timedelta(seconds=1), 0),  # 0.277… Wh rounds down to 0
        (7, timedelta(minutes=30), 3),  # 3.5 Wh rounds down to 3
    ],
    ids=["1kW-1h", "1kW-36s", "1kW-1s-floor-0", "7W-30min-floor"],
)
def test_physical_bound_exactly_at_it_accepted_and_1wh_over_rejected(
    capacity_w: int, duration: timedelta, bound_wh: int
) -> None:
    profile = device(capacity_w)
    assert physical_bound_wh(capacity_w, T0, T0 + duration) == bound_wh
    check_max_energy(interval(bound_wh, duration), profile, PHYSICAL)
    with pytest.raises(EnergyExceedsBound) as raised:
        check_max_energy(interval(bound_wh + 1, duration), profile, PHYSICAL)
    error = raised.value
    assert (error.energy_wh, error.bound_wh, error.rule) == (bound_wh + 1, bound_wh, "physical")
    assert error.code == "energy_exceeds_bound"
    assert f"{bound_wh + 1} Wh exceeds the physical bound of {bound_wh} Wh" in str(error)
    assert error.details["bound_wh"] == bound_wh


def test_physical_bound_applies_even_when_drec_would_allow_more() -> None:
    generous = device(capacity_w=1000, yield_=Decimal(8760 * 2))  # D-REC bound 2400 Wh in 1 h
    assert drec_bound_wh(generous, T0, T0 + HOUR, DREC) == 2400
    check_max_energy(interval(1000), generous, DREC)
    with pytest.raises(EnergyExceedsBound) as raised:
        check_max_energy(interval(1001), generous, DREC)
    assert raised.value.rule == "physical"


def test_physical_policy_does_not_apply_the_drec_rule() -> None:
    profile = device()  # D-REC 1200 Wh/h, physical 8760 Wh/h
    check_max_energy(interval(8760), profile, PHYSICAL)
    with pytest.raises(EnergyExceedsBound):
        check_max_energy(interval(8760), profile, DREC)


# --- D-REC yield rule ---------------------------------------------------------------------
# capacity 8760 W, 1 h, yield 1000 kWh/kW/yr: 8760 × 1 × 1000 / 8760 = 1000 Wh before
# degradation and margin; × 1.2 margin = 1200 Wh at age 0.


@pytest.mark.parametrize(
    ("age", "duration", "yield_", "bound_wh"),
    [
        (timedelta(0), HOUR, Decimal(1000), 1200),
        (YEAR, HOUR, Decimal(1000), 1194),  # × 0.995
        (2 * YEAR, HOUR, Decimal(1000), 1188),  # 1188.03
        (YEAR / 2, HOUR, Decimal(1000), 1196),  # × 0.995^0.5 = 1196.996…
        (timedelta(0), 2 * HOUR, Decimal(1000), 2400),
        (timedelta(0), HOUR, None, 1800),  # device has no yield: policy default 1500
        (-YEAR, HOUR, Decimal(1000), 1200),  # before commissioning: age 0
    ],
    ids=["age-0", "age-1y", "age-2y", "age-half-year", "2h", "default-yield", "pre-commissioning"],
)
def test_drec_bound_exactly_at_it_accepted_and_1wh_over_rejected(
    age: timedelta, duration: timedelta, yield_: Decimal | None, bound_wh: int
) -> None:
    profile = device(commissioned=T0 - age, yield_=yield_)
    assert drec_bound_wh(profile, T0, T0 + duration, DREC) == bound_wh
    check_max_energy(interval(bound_wh, duration), profile, DREC)
    with pytest.raises(EnergyExceedsBound) as raised:
        check_max_energy(interval(bound_wh + 1, duration), profile, DREC)
    assert (raised.value.bound_wh, raised.value.rule) == (bound_wh, "drec")


def test_drec_parameters_are_configurable() -> None:
    policy = MaxEnergyPolicy(
        default_yield_kwh_per_kw_year=Decimal(2000),
        degradation_per_year=Decimal("0.1"),
        margin=Decimal(0),
    )
    profile = device(commissioned=T0 - YEAR, yield_=None)
    assert drec_bound_wh(profile, T0, T0 + HOUR, policy) == 1800  # 2000 × 0.9


def test_drec_bound_is_positive_in_the_first_year_and_shrinks_with_age() -> None:
    """The literal `capacity × hours × age × degradation × yield` fails both of these."""
    bounds = [
        drec_bound_wh(device(commissioned=T0 - n * YEAR), T0, T0 + HOUR, DREC) for n in (0, 10, 30)
    ]
    assert bounds[0] == 1200
    assert bounds[0] > bounds[1] > bounds[2] > 0


def test_drec_bound_is_measured_over_the_interval_not_since_onboarding() -> None:
    old_device = device(commissioned=T0 - 5 * YEAR)
    one_hour = drec_bound_wh(old_device, T0, T0 + HOUR, DREC)
    assert drec_bound_wh(old_device, T0, T0 + 2 * HOUR, DREC) in (2 * one_hour, 2 * one_hour + 1)


def test_device_age_is_in_years_of_365_days() -> None:
    assert device_age_years(T0, T0 + YEAR) == 1
    assert device_age_years(T0, T0 + YEAR / 4) == Decimal("0.25")
    assert device_age_years(T0, T0 - HOUR) == 0


@given(
    capacity_w=st.integers(1, 10**9),
    duration_s=st.integers(1, 400 * 86400),
    age_s=st.integers(-86400, 40 * 365 * 86400),
    yield_=st.integers(1, 20000),
)
@settings(max_examples=200, deadline=None)
def test_check_agrees_with_the_bound_exactly(
    capacity_w: int, duration_s: int, age_s: int, yield_: int
) -> None:
    """The fast path never accepts above, nor rejects at, the exact D-REC bound."""
    profile = device(capacity_w, T0 - timedelta(seconds=age_s), Decimal(yield_))
    end = T0 + timedelta(seconds=duration_s)
    bound_wh = min(drec_bound_wh(profile, T0, end, DREC), physical_bound_wh(capacity_w, T0, end))
    check_max_energy(EnergyInterval("dev-1", T0, end, bound_wh), profile, DREC)
    with pytest.raises(EnergyExceedsBound):
        check_max_energy(EnergyInterval("dev-1", T0, end, bound_wh + 1), profile, DREC)


# --- values and configuration -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "literal"}, "name"),
        ({"degradation_per_year": Decimal(1)}, "degradation_per_year"),
        ({"degradation_per_year": Decimal("-0.01")}, "degradation_per_year"),
        ({"margin": Decimal("-0.1")}, "margin"),
        ({"default_yield_kwh_per_kw_year": Decimal(0)}, "default_yield_kwh_per_kw_year"),
        ({"margin": 0.2}, "margin"),
    ],
    ids=[
        "unknown-name",
        "degradation-1",
        "negative-degradation",
        "negative-margin",
        "zero-yield",
        "float",
    ],
)
def test_invalid_policy_is_a_configuration_error(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidMaxEnergyPolicy) as raised:
        MaxEnergyPolicy(**kwargs)  # type: ignore[arg-type]
    assert isinstance(raised.value, ConfigurationError)
    assert raised.value.field == field


def test_policy_name_accepts_its_string_form() -> None:
    assert MaxEnergyPolicy(name="physical").name is MaxEnergyRule.PHYSICAL  # type: ignore[arg-type]


@pytest.mark.parametrize("capacity_w", [0, -1], ids=["zero", "negative"])
def test_capacity_must_be_positive(capacity_w: int) -> None:
    with pytest.raises(CapacityNotPositive):
        device(capacity_w)


@pytest.mark.parametrize(
    ("start", "end", "energy_wh", "error"),
    [
        (T0, T0, 1, IntervalNotPositive),
        (T0, T0 - HOUR, 1, IntervalNotPositive),
        (T0, T0 + HOUR, -1, NegativeValue),
        (T0.replace(tzinfo=None), T0 + HOUR, 1, NaiveTimestamp),
    ],
    ids=["empty", "reversed", "negative-energy", "naive-start"],
)
def test_invalid_interval_rejected(
    start: datetime, end: datetime, energy_wh: int, error: type[ValidationError]
) -> None:
    with pytest.raises(error):
        EnergyInterval("dev-1", start, end, energy_wh)


def test_interval_normalises_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    value = EnergyInterval("dev-1", datetime(2024, 1, 1, 2, tzinfo=plus_two), T0, 5)
    assert value.start == datetime(2024, 1, 1, tzinfo=UTC)
    assert value.start.tzinfo is UTC
