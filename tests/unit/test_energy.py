"""Max-energy plausibility: physical bound and D-REC yield rule, at their edges."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from granular.domain.devices import DeviceKind
from granular.domain.energy import (
    CapacityNotPositive,
    DeviceProfile,
    EnergyExceedsBound,
    EnergyInterval,
    IntervalNotPositive,
    InvalidMaxEnergyPolicy,
    MaxEnergyPolicy,
    MaxEnergyRule,
    TrailingYear,
    TrailingYearNotCovered,
    check_max_energy,
    device_age_years,
    energy_by_start_day,
    physical_bound_wh,
    share_wh,
    split_at_midnights,
    yearly_yield_bound_wh,
)
from granular.domain.units import NaiveTimestamp, NegativeValue
from granular.errors import ConfigurationError, ValidationError

T0 = datetime(2024, 3, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
YEAR = timedelta(days=365)
PHYSICAL = MaxEnergyPolicy(name=MaxEnergyRule.PHYSICAL)
DREC = MaxEnergyPolicy()


def device(
    capacity_w: int = 8760,
    commissioned: datetime = T0,
    yield_: Decimal | None = Decimal(1000),
    kind: DeviceKind = DeviceKind.PRODUCTION,
) -> DeviceProfile:
    return DeviceProfile("dev-1", capacity_w, commissioned, yield_, kind)


def check(item: EnergyInterval, profile: DeviceProfile, policy: MaxEnergyPolicy) -> None:
    """`check_max_energy` with nothing stored: the interval is the whole trailing year."""
    check_max_energy(item, profile, policy, TrailingYear.nothing_stored())


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
@pytest.mark.parametrize("kind", list(DeviceKind), ids=[k.value for k in DeviceKind])
def test_physical_bound_exactly_at_it_accepted_and_1wh_over_rejected(
    capacity_w: int, duration: timedelta, bound_wh: int, kind: DeviceKind
) -> None:
    """For a consumption meter the capacity is its connection capacity: the same bound."""
    profile = device(capacity_w, kind=kind)
    assert physical_bound_wh(capacity_w, T0, T0 + duration) == bound_wh
    check(interval(bound_wh, duration), profile, PHYSICAL)
    with pytest.raises(EnergyExceedsBound) as raised:
        check(interval(bound_wh + 1, duration), profile, PHYSICAL)
    error = raised.value
    assert (error.energy_wh, error.bound_wh, error.rule) == (bound_wh + 1, bound_wh, "physical")
    assert error.code == "energy_exceeds_bound"
    assert f"{bound_wh + 1} Wh exceeds the physical bound of {bound_wh} Wh" in str(error)
    assert error.details["bound_wh"] == bound_wh


def test_physical_bound_applies_even_when_the_year_allows_more() -> None:
    profile = device(capacity_w=1000)  # yield bound 1,200,000 Wh a year
    check(interval(1000), profile, DREC)
    with pytest.raises(EnergyExceedsBound) as raised:
        check(interval(1001), profile, DREC)
    assert raised.value.rule == "physical"


# --- D-REC yield rule over the trailing year ----------------------------------------------
# capacity 1000 W, yield 1000 kWh/kW/yr: 1,000,000 Wh a year before degradation and margin;
# × 1.2 margin = 1,200,000 Wh at age 0.


@pytest.mark.parametrize(
    ("age", "yield_", "bound_wh"),
    [
        (timedelta(0), Decimal(1000), 1_200_000),
        (YEAR, Decimal(1000), 1_194_000),  # × 0.995
        (2 * YEAR, Decimal(1000), 1_188_030),  # × 0.995²
        (YEAR / 2, Decimal(1000), 1_196_996),  # × 0.995^0.5 = 1,196,996.87…
        (timedelta(0), None, 1_800_000),  # device has no yield: policy default 1500
        (-YEAR, Decimal(1000), 1_200_000),  # before commissioning: age 0
    ],
    ids=["age-0", "age-1y", "age-2y", "age-half-year", "default-yield", "pre-commissioning"],
)
def test_yield_bound_over_a_year_exactly_at_it_accepted_and_1wh_over_rejected(
    age: timedelta, yield_: Decimal | None, bound_wh: int
) -> None:
    """Age is measured at the new interval's end; one interval of exactly a year."""
    end = T0 + YEAR
    profile = device(1000, commissioned=end - age, yield_=yield_)
    assert yearly_yield_bound_wh(profile, end, DREC) == bound_wh
    check(interval(bound_wh, YEAR), profile, DREC)
    with pytest.raises(EnergyExceedsBound) as raised:
        check(interval(bound_wh + 1, YEAR), profile, DREC)
    error = raised.value
    assert (error.energy_wh, error.bound_wh, error.rule) == (bound_wh + 1, bound_wh, "drec")
    assert error.window == (end - YEAR, end)
    assert error.details["window_end"] == end.isoformat()
    assert "in the 365 days" in str(error) and f"bound of {bound_wh} Wh" in str(error)


def test_a_sunny_hour_passes_alone_but_not_on_top_of_a_full_year() -> None:
    """50 kW, yield 1500: a noon hour at 80 % of nameplate is 40 kWh, far over a year's
    bound spread per hour (about 12.3 kWh) and accepted; on top of a year already at the
    bound it is rejected, and exactly at the bound it is accepted."""
    profile = DeviceProfile("solar", 50_000, T0 - 10 * YEAR)
    noon = interval(40_000, HOUR, start=T0 + YEAR)
    end = noon.end
    bound_wh = yearly_yield_bound_wh(profile, end, DREC)
    check_max_energy(noon, profile, DREC, TrailingYear.nothing_stored())

    def year_before(energy_wh: int) -> TrailingYear:
        stored = EnergyInterval("solar", end - YEAR, noon.start, energy_wh)
        return TrailingYear(covers=(end, end), intervals=[stored])

    check_max_energy(noon, profile, DREC, year_before(bound_wh - 40_000))
    with pytest.raises(EnergyExceedsBound) as raised:
        check_max_energy(noon, profile, DREC, year_before(bound_wh - 40_000 + 1))
    error = raised.value
    assert (error.energy_wh, error.bound_wh, error.interval_wh) == (bound_wh + 1, bound_wh, 40_000)


def test_the_physical_policy_and_consumption_meters_skip_the_yield_rule() -> None:
    end = T0 + YEAR
    full = TrailingYear(
        covers=(end, end), intervals=[EnergyInterval("dev-1", end - YEAR, end - HOUR, 10**9)]
    )
    last_hour = interval(1000, HOUR, start=end - HOUR)
    with pytest.raises(EnergyExceedsBound):
        check_max_energy(last_hour, device(1000), DREC, full)
    check_max_energy(last_hour, device(1000), PHYSICAL, full)
    check_max_energy(last_hour, device(1000, kind=DeviceKind.CONSUMPTION), DREC, full)


def test_an_interval_starting_before_the_window_counts_by_its_share() -> None:
    end = T0 + YEAR
    straddling = EnergyInterval("dev-1", end - YEAR - 10 * DAY, end - YEAR + 10 * DAY, 2001)
    year = TrailingYear(covers=(end, end), intervals=[straddling])
    assert year.energy_wh(end) == 1000  # half of 2001, rounded down
    assert share_wh(straddling, end - YEAR, end) == 1000
    # The new interval itself, longer than a year, also counts by its share.
    two_years = EnergyInterval("dev-1", end - 2 * YEAR, end, 2_400_001)
    assert share_wh(two_years, end - YEAR, end) == 1_200_000
    check_max_energy(two_years, device(1000, commissioned=end), DREC, TrailingYear.nothing_stored())


def test_drec_bound_is_positive_in_the_first_year_and_shrinks_with_age() -> None:
    """The literal `capacity × hours × age × degradation × yield` fails both of these."""
    bounds = [
        yearly_yield_bound_wh(device(1000, commissioned=T0 - n * YEAR), T0, DREC)
        for n in (0, 10, 30)
    ]
    assert bounds[0] == 1_200_000
    assert bounds[0] > bounds[1] > bounds[2] > 0


def test_drec_parameters_are_configurable() -> None:
    policy = MaxEnergyPolicy(
        default_yield_kwh_per_kw_year=Decimal(2000),
        degradation_per_year=Decimal("0.1"),
        margin=Decimal(0),
    )
    profile = device(1000, commissioned=T0 - YEAR, yield_=None)
    assert yearly_yield_bound_wh(profile, T0, policy) == 1_800_000  # 2000 × 1000 × 0.9


def test_device_age_is_in_years_of_365_days() -> None:
    assert device_age_years(T0, T0 + YEAR) == 1
    assert device_age_years(T0, T0 + YEAR / 4) == Decimal("0.25")
    assert device_age_years(T0, T0 - HOUR) == 0


def test_a_trailing_year_refuses_an_end_it_was_not_loaded_for() -> None:
    year = TrailingYear(covers=(T0, T0 + HOUR))
    assert year.energy_wh(T0 + HOUR) == 0
    with pytest.raises(TrailingYearNotCovered):
        year.energy_wh(T0 + 2 * HOUR)


@given(
    capacity_w=st.integers(1, 10**9),
    duration_s=st.integers(1, 365 * 86400),
    age_s=st.integers(-86400, 40 * 365 * 86400),
    yield_=st.integers(1, 20000),
)
@settings(max_examples=200, deadline=None)
def test_check_agrees_with_the_bound_exactly(
    capacity_w: int, duration_s: int, age_s: int, yield_: int
) -> None:
    """The fast path never accepts above, nor rejects at, the exact bound."""
    end = T0 + timedelta(seconds=duration_s)
    profile = device(capacity_w, end - timedelta(seconds=age_s), Decimal(yield_))
    bound_wh = min(
        yearly_yield_bound_wh(profile, end, DREC), physical_bound_wh(capacity_w, T0, end)
    )
    check(EnergyInterval("dev-1", T0, end, bound_wh), profile, DREC)
    with pytest.raises(EnergyExceedsBound):
        check(EnergyInterval("dev-1", T0, end, bound_wh + 1), profile, DREC)


@st.composite
def stored_and_ends(
    draw: st.DrawFn,
) -> tuple[list[EnergyInterval], list[EnergyInterval], datetime, datetime]:
    """Non-overlapping intervals on a day grid over three years, split into stored and
    added-later, and a request's first and last end."""
    cuts = sorted(draw(st.sets(st.integers(0, 3 * 365), min_size=2, max_size=40)))
    intervals = [
        EnergyInterval("dev-1", T0 + a * DAY, T0 + b * DAY, draw(st.integers(0, 10**6)))
        for a, b in pairwise(cuts)
        if draw(st.booleans())
    ]
    added = [i for i in intervals if draw(st.booleans())]
    stored = [i for i in intervals if i not in added]
    first, last = sorted(draw(st.integers(0, 3 * 365)) for _ in range(2))
    return stored, added, T0 + first * DAY, T0 + last * DAY


@given(stored_and_ends(), st.data())
@settings(max_examples=300, deadline=None)
def test_trailing_year_equals_summing_every_share(
    case: tuple[list[EnergyInterval], list[EnergyInterval], datetime, datetime],
    data: st.DataObject,
) -> None:
    """Loaded as the storage layer does (a summed core, the rest as intervals), plus what
    the request adds, the trailing year of any covered end is the sum of all shares."""
    stored, added, first_end, last_end = case
    core_start, core_end = TrailingYear.core(first_end, last_end)
    inside = [i for i in stored if core_start <= i.start and i.end <= core_end]
    edges = [
        i for i in stored if i not in inside and i.start < last_end and i.end > first_end - YEAR
    ]
    year = TrailingYear(
        covers=(first_end, last_end), core_wh=sum(i.energy_wh for i in inside), intervals=edges
    )
    for item in added:
        year.add(item)
    days = (last_end - first_end) // DAY
    end = first_end + data.draw(st.integers(0, days)) * DAY
    expected = sum(share_wh(i, end - YEAR, end) for i in stored + added)
    assert year.energy_wh(end) == expected


# --- the daily rollup's pure parts ---------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "days", "partial"),
    [
        ("2025-03-01T00:00", "2025-03-04T00:00", ("2025-03-01", "2025-03-04"), []),
        (
            "2025-03-01T06:00",
            "2025-03-04T18:30",
            ("2025-03-02", "2025-03-04"),
            [("2025-03-01T06:00", "2025-03-02T00:00"), ("2025-03-04T00:00", "2025-03-04T18:30")],
        ),
        ("2025-03-01T06:00", "2025-03-01T07:00", None, [("2025-03-01T06:00", "2025-03-01T07:00")]),
        ("2025-03-01T23:00", "2025-03-02T01:00", None, [("2025-03-01T23:00", "2025-03-02T01:00")]),
        (
            "2025-03-01T23:00",
            "2025-03-03T00:00",
            ("2025-03-02", "2025-03-03"),
            [("2025-03-01T23:00", "2025-03-02T00:00")],
        ),
        ("2025-03-01T06:00", "2025-03-01T06:00", None, []),
    ],
    ids=[
        "whole-days",
        "both-partial",
        "within-a-day",
        "across-one-midnight",
        "end-on-midnight",
        "empty",
    ],
)
def test_a_span_splits_at_utc_midnights(
    start: str, end: str, days: tuple[str, str] | None, partial: list[tuple[str, str]]
) -> None:
    split = split_at_midnights(at(start), at(end))
    assert split.days == (
        None if days is None else (date.fromisoformat(days[0]), date.fromisoformat(days[1]))
    )
    assert split.partial == tuple((at(a), at(b)) for a, b in partial)


def test_a_split_is_taken_in_utc() -> None:
    """23:30 at +02:00 is 21:30 UTC: the UTC day, not the local one."""
    plus_two = timezone(timedelta(hours=2))
    split = split_at_midnights(
        datetime(2025, 3, 1, 23, 30, tzinfo=plus_two), datetime(2025, 3, 3, 3, tzinfo=plus_two)
    )
    assert split.days == (date(2025, 3, 2), date(2025, 3, 3))
    assert split.partial == (
        (at("2025-03-01T21:30"), at("2025-03-02T00:00")),
        (at("2025-03-03T00:00"), at("2025-03-03T01:00")),
    )


@given(st.integers(0, 5 * 24 * 60), st.integers(0, 5 * 24 * 60))
def test_a_split_tiles_its_span(start_min: int, length_min: int) -> None:
    start = T0 + timedelta(minutes=start_min)
    end = start + timedelta(minutes=length_min)
    split = split_at_midnights(start, end)
    pieces = list(split.partial)
    if split.days is not None:
        first, stop = (datetime.combine(d, time(), UTC) for d in split.days)
        assert first < stop
        pieces.append((first, stop))
    pieces.sort()
    assert sum((b - a for a, b in pieces), timedelta()) == end - start
    assert all(a < b for a, b in pieces)
    assert all(b == c for (_, b), (c, _) in pairwise(pieces))
    longest = DAY if split.days is not None else 2 * DAY  # two partial days at most
    assert all(b - a < longest for a, b in split.partial)


def test_the_rollup_puts_a_whole_interval_on_its_start_day() -> None:
    intervals = [
        EnergyInterval("dev-1", at("2025-03-01T22:00"), at("2025-03-02T02:00"), 400),
        EnergyInterval("dev-1", at("2025-03-02T02:00"), at("2025-03-02T03:00"), 7),
        EnergyInterval("dev-1", at("2025-03-02T23:00"), at("2025-03-05T00:00"), 1000),
    ]
    assert energy_by_start_day(intervals) == {
        date(2025, 3, 1): 400,
        date(2025, 3, 2): 1007,
    }


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
