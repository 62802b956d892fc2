"""Units, meter reads → energy intervals: in-order validation, idempotency, edges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from granular.domain.devices import DeviceKind
from granular.domain.energy import (
    DeviceProfile,
    EnergyExceedsBound,
    EnergyInterval,
    MaxEnergyPolicy,
    MaxEnergyRule,
    TrailingYear,
    yearly_yield_bound_wh,
)
from granular.domain.reads import (
    AggregateDecreased,
    DeviceReadState,
    HistoryOverlapsRecorded,
    InconsistentReadState,
    InMemoryRecordedReads,
    MeterRead,
    RawRead,
    ReadBatch,
    ReadBeforeCommissioning,
    ReadConflict,
    ReadEndNotAfterPrevious,
    ReadGapTooLong,
    ReadInFuture,
    ReadKind,
    ReadKindSwitchNotAllowed,
    ReadStartMissing,
    ReadStartNotAllowed,
    ReadStartNotBeforeEnd,
    ReadStatus,
    RecordedReads,
    advance_state,
    validate_reads,
)
from granular.domain.units import (
    MAX_WH,
    EnergyUnit,
    FractionalWh,
    InvalidNumber,
    NaiveTimestamp,
    NegativeValue,
    TimestampOutOfRange,
    UnknownUnit,
    ValueTooLarge,
    shift_months,
    to_utc,
    to_wh,
)
from granular.errors import ValidationError

# --- units --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "expected_wh"),
    [
        ("1", "Wh", 1),
        (7, "kWh", 7000),
        ("1.5", "kWh", 1500),
        ("0.001", "kWh", 1),
        ("0.000001", "MWh", 1),
        ("2.5E3", EnergyUnit.WH, 2500),
        (Decimal("1.0000"), "Wh", 1),
        (" 12 ", "Wh", 12),
        ("0", "MWh", 0),
        ("-0", "Wh", 0),
        (str(MAX_WH), "Wh", MAX_WH),
    ],
    ids=[
        "wh",
        "int-kwh",
        "decimal-kwh",
        "1wh-in-kwh",
        "1wh-in-mwh",
        "exponent",
        "trailing-zeros",
        "whitespace",
        "zero",
        "negative-zero",
        "max",
    ],
)
def test_to_wh_converts_exactly(value: Decimal | int | str, unit: str, expected_wh: int) -> None:
    assert to_wh(value, unit) == expected_wh


@pytest.mark.parametrize(
    ("value", "unit", "error"),
    [
        ("0.5", "Wh", FractionalWh),
        ("1.0001", "kWh", FractionalWh),
        ("0.0000001", "MWh", FractionalWh),
        ("-1", "Wh", NegativeValue),
        (-1, "kWh", NegativeValue),
        ("-0.001", "kWh", NegativeValue),
        (1.5, "kWh", InvalidNumber),
        (True, "Wh", InvalidNumber),
        ("abc", "Wh", InvalidNumber),
        ("NaN", "Wh", InvalidNumber),
        ("Infinity", "Wh", InvalidNumber),
        ("1", "GWh", UnknownUnit),
        ("1", "kwh", UnknownUnit),
        (str(MAX_WH + 1), "Wh", ValueTooLarge),
        ("1e400", "MWh", ValueTooLarge),
    ],
    ids=[
        "half-wh",
        "fraction-of-kwh",
        "fraction-of-mwh",
        "negative-str",
        "negative-int",
        "negative-kwh",
        "float",
        "bool",
        "not-a-number",
        "nan",
        "infinity",
        "unknown-unit",
        "unit-case",
        "max-plus-1",
        "huge-exponent",
    ],
)
def test_to_wh_refuses(value: object, unit: str, error: type[ValidationError]) -> None:
    with pytest.raises(error) as raised:
        to_wh(value, unit, field="value")  # type: ignore[arg-type]
    assert raised.value.code != ValidationError.code


def test_fraction_error_names_field_value_and_unit() -> None:
    with pytest.raises(FractionalWh) as raised:
        to_wh("1.0005", "kWh", field="value")
    assert raised.value.details == {"field": "value", "value": "1.0005", "unit": "kWh"}
    assert "1.0005 kWh is not a whole number of Wh" in str(raised.value)


@given(st.integers(0, MAX_WH), st.sampled_from(list(EnergyUnit)))
@settings(max_examples=200)
def test_to_wh_round_trips_any_whole_wh(energy_wh: int, unit: EnergyUnit) -> None:
    in_unit = Decimal(energy_wh).scaleb(-unit.exponent)
    assert to_wh(in_unit, unit) == energy_wh
    assert to_wh(str(in_unit), unit) == energy_wh


def test_to_wh_takes_any_number_of_digits() -> None:
    """A value past Python's 4,300-digit int() limit was a ValueError, a 500."""
    zeros = "0" * 1_000_000
    assert to_wh(f"1.{zeros}", "kWh") == 1000
    assert to_wh(Decimal(f"25{zeros}e-1000000"), "Wh") == 25
    with pytest.raises(FractionalWh):
        to_wh(f"1.{zeros}1", "MWh")
    with pytest.raises(ValueTooLarge):
        to_wh(f"1{zeros}", "Wh")


def test_to_utc_normalises_and_refuses_naive() -> None:
    local = datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert to_utc(local) == datetime(2024, 1, 1, tzinfo=UTC)
    assert to_utc(local).tzinfo is UTC
    with pytest.raises(NaiveTimestamp):
        to_utc(datetime(2024, 1, 1), field="end")


@pytest.mark.parametrize(
    "value",
    [
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
    ],
    ids=["after-9999-in-utc", "before-year-1-in-utc"],
)
def test_to_utc_refuses_an_instant_utc_cannot_hold(value: datetime) -> None:
    """It raised OverflowError, a 500 from any endpoint taking a timestamp."""
    with pytest.raises(TimestampOutOfRange) as refused:
        to_utc(value, field="end")
    assert refused.value.details == {"field": "end", "value": value.isoformat()}


def test_a_read_utc_cannot_hold_is_rejected_and_the_rest_go_on() -> None:
    beyond = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
    batch = run([delta(beyond, 1), delta(T0, 1)])
    assert [o.status for o in batch.outcomes] == [ReadStatus.REJECTED, ReadStatus.ACCEPTED]
    assert isinstance(batch.outcomes[0].error, TimestampOutOfRange)


@pytest.mark.parametrize(
    ("value", "months", "expected"),
    [
        (datetime(2024, 3, 31, 10, tzinfo=UTC), -1, datetime(2024, 2, 29, 10, tzinfo=UTC)),
        (datetime(2024, 2, 29, tzinfo=UTC), -12, datetime(2023, 2, 28, tzinfo=UTC)),
        (datetime(2023, 1, 31, tzinfo=UTC), 1, datetime(2023, 2, 28, tzinfo=UTC)),
        (datetime(2024, 12, 15, tzinfo=UTC), 1, datetime(2025, 1, 15, tzinfo=UTC)),
        (datetime(2025, 6, 15, 12, tzinfo=UTC), -36, datetime(2022, 6, 15, 12, tzinfo=UTC)),
    ],
    ids=["clamp-leap-feb", "leap-day-minus-year", "clamp-feb", "across-year", "three-years"],
)
def test_shift_months(value: datetime, months: int, expected: datetime) -> None:
    assert shift_months(value, months) == expected


# --- reads: set-up ------------------------------------------------------------------------

NOW = datetime(2025, 6, 15, 12, tzinfo=UTC)
COMMISSIONED = datetime(2015, 1, 1, tzinfo=UTC)
T0 = datetime(2025, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)
# Big enough that max-energy never interferes with the read-logic tests.
DEVICE = DeviceProfile("dev-1", capacity_w=10**13, commissioning_date=COMMISSIONED)
PHYSICAL = MaxEnergyPolicy(name=MaxEnergyRule.PHYSICAL)


def agg(end: datetime, value: int | str) -> RawRead:
    return RawRead(ReadKind.AGGREGATE, end, value)


def delta(end: datetime, value: int | str) -> RawRead:
    return RawRead(ReadKind.DELTA, end, value)


def hist(start: datetime, end: datetime, value: int | str) -> RawRead:
    return RawRead(ReadKind.HISTORY, end, value, start=start)


def run(
    reads: Sequence[RawRead | MeterRead],
    *,
    state: DeviceReadState | None = None,
    recorded: RecordedReads | None = None,
    year: TrailingYear | None = None,
    device: DeviceProfile = DEVICE,
    policy: MaxEnergyPolicy = PHYSICAL,
    now: datetime = NOW,
) -> ReadBatch:
    return validate_reads(
        reads,
        device=device,
        state=state or DeviceReadState(),
        recorded=recorded or InMemoryRecordedReads(),
        year=year or TrailingYear.nothing_stored(),
        policy=policy,
        now=now,
    )


def then(batch: ReadBatch, reads: Sequence[RawRead], **kwargs: object) -> ReadBatch:
    """Run `reads` as the next request, after `batch` was stored."""
    recorded = InMemoryRecordedReads(batch.accepted_reads, batch.intervals)
    year = TrailingYear(covers=None, intervals=batch.intervals)
    return run(reads, state=batch.state, recorded=recorded, year=year, **kwargs)  # type: ignore[arg-type]


def statuses(batch: ReadBatch) -> list[str]:
    return [o.status.value for o in batch.outcomes]


def energies(batch: ReadBatch) -> list[int | None]:
    return [o.interval.energy_wh if o.interval else None for o in batch.outcomes]


def error_of(batch: ReadBatch, index: int) -> ValidationError:
    error = batch.outcomes[index].error
    assert error is not None, batch.outcomes[index]
    return error


# --- baseline, intervals, order -----------------------------------------------------------


@pytest.mark.parametrize("kind", [ReadKind.DELTA, ReadKind.AGGREGATE], ids=["delta", "aggregate"])
def test_first_delta_or_aggregate_read_only_sets_the_baseline(kind: ReadKind) -> None:
    batch = run([RawRead(kind, T0, 100)])
    (outcome,) = batch.outcomes
    assert outcome.status is ReadStatus.ACCEPTED
    assert outcome.baseline_only and outcome.interval is None
    assert batch.state.last_end == T0


def test_aggregate_makes_interval_from_previous_end_and_difference() -> None:
    batch = run([agg(T0, 100), agg(T0 + HOUR, 350), agg(T0 + 3 * HOUR, 400)])
    assert batch.intervals == (
        EnergyInterval("dev-1", T0, T0 + HOUR, 250),
        EnergyInterval("dev-1", T0 + HOUR, T0 + 3 * HOUR, 50),
    )


def test_delta_value_is_the_energy_since_previous_end() -> None:
    batch = run([delta(T0, 999), delta(T0 + HOUR, 10), delta(T0 + 2 * HOUR, 20)])
    assert batch.intervals == (
        EnergyInterval("dev-1", T0, T0 + HOUR, 10),
        EnergyInterval("dev-1", T0 + HOUR, T0 + 2 * HOUR, 20),
    )


def test_reads_of_one_request_see_each_other_not_a_stale_state() -> None:
    stored = run([agg(T0, 100)])
    batch = then(stored, [agg(T0 + HOUR, 200), agg(T0 + 2 * HOUR, 250)])
    # Against the stale stored state, the second read would have given 150 Wh.
    assert energies(batch) == [100, 50]
    assert batch.intervals[1].start == T0 + HOUR


def test_a_rejected_read_changes_nothing_and_the_next_read_goes_on() -> None:
    batch = run([agg(T0, 100), agg(T0 + HOUR, 50), agg(T0 + 2 * HOUR, 150)])
    assert statuses(batch) == ["accepted", "rejected", "accepted"]
    assert batch.intervals == (EnergyInterval("dev-1", T0, T0 + 2 * HOUR, 50),)


def test_state_carries_over_between_requests() -> None:
    first = run([agg(T0, 100), agg(T0 + HOUR, 150)])
    second = then(first, [agg(T0 + 2 * HOUR, 175)])
    assert second.intervals == (EnergyInterval("dev-1", T0 + HOUR, T0 + 2 * HOUR, 25),)


def test_state_can_be_rebuilt_by_folding_accepted_reads() -> None:
    batch = run([agg(T0, 1), agg(T0 + HOUR, 5), hist(T0 - 5 * HOUR, T0 - 4 * HOUR, 3), agg(T0, 9)])
    assert reduce(advance_state, batch.accepted_reads, DeviceReadState()) == batch.state


def test_units_are_converted_per_read() -> None:
    batch = run(
        [
            RawRead(ReadKind.DELTA, T0, "0", unit="kWh"),
            RawRead(ReadKind.DELTA, T0 + HOUR, "1.5", unit="kWh"),
        ]
    )
    assert energies(batch) == [None, 1500]


# --- aggregate monotonic ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("second_value", "status", "energy_wh"),
    [(100, "accepted", 0), (99, "rejected", None)],
    ids=["equal-total-0wh", "1wh-lower"],
)
def test_aggregate_must_not_decrease(second_value: int, status: str, energy_wh: int | None) -> None:
    batch = run([agg(T0, 100), agg(T0 + HOUR, second_value)])
    assert statuses(batch)[1] == status
    assert energies(batch)[1] == energy_wh
    if status == "rejected":
        error = error_of(batch, 1)
        assert isinstance(error, AggregateDecreased)
        assert (error.value_wh, error.previous_wh) == (99, 100)
        assert error.code == "aggregate_decreased"


# --- gap ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ReadKind.DELTA, ReadKind.AGGREGATE], ids=["delta", "aggregate"])
@pytest.mark.parametrize(
    ("gap", "status"),
    [(timedelta(days=365), "accepted"), (timedelta(days=365, seconds=1), "rejected")],
    ids=["exactly-365d", "365d-plus-1s"],
)
def test_gap_over_365_days_rejected(kind: ReadKind, gap: timedelta, status: str) -> None:
    start = NOW - gap
    batch = run([RawRead(kind, start, 0), RawRead(kind, NOW, 1)])
    assert statuses(batch) == ["accepted", status]
    if status == "rejected":
        error = error_of(batch, 1)
        assert isinstance(error, ReadGapTooLong)
        assert error.details["max_gap_days"] == 365
        assert error.details["gap_seconds"] == 365 * 86400 + 1


def test_after_a_long_gap_a_history_read_lets_the_series_restart() -> None:
    stored = run([delta(T0 - 400 * 24 * HOUR, 0)])
    stuck = then(stored, [delta(T0, 5)])
    assert isinstance(error_of(stuck, 0), ReadGapTooLong)
    recovered = then(
        stored, [hist(T0 - 2 * HOUR, T0, 7), delta(T0 + HOUR, 5), delta(T0 + 2 * HOUR, 6)]
    )
    # The delta after the history runs from the history's end (issue 10).
    assert energies(recovered) == [7, 5, 6]


# --- ordering, duplicates, conflicts ------------------------------------------------------


@pytest.mark.parametrize("kind", [ReadKind.DELTA, ReadKind.AGGREGATE], ids=["delta", "aggregate"])
@pytest.mark.parametrize(
    "offset", [timedelta(0), -SECOND], ids=["same-end-other-value", "earlier-end"]
)
def test_end_must_be_after_previous_end(kind: ReadKind, offset: timedelta) -> None:
    batch = run(
        [RawRead(kind, T0, 10), RawRead(kind, T0 + HOUR, 20), RawRead(kind, T0 + HOUR + offset, 30)]
    )
    expected = ReadConflict if offset == timedelta(0) else ReadEndNotAfterPrevious
    assert isinstance(error_of(batch, 2), expected)


@pytest.mark.parametrize("kind", [ReadKind.DELTA, ReadKind.AGGREGATE], ids=["delta", "aggregate"])
def test_end_at_the_baseline_is_refused_even_without_the_stored_read(kind: ReadKind) -> None:
    total = 5 if kind is ReadKind.AGGREGATE else None
    state = DeviceReadState(kind, T0, kind, total)
    error = error_of(run([RawRead(kind, T0, 5)], state=state), 0)
    assert isinstance(error, ReadEndNotAfterPrevious)


def test_identical_read_in_the_same_request_is_a_duplicate() -> None:
    batch = run([agg(T0, 100), agg(T0 + HOUR, 200), agg(T0 + HOUR, 200)])
    assert statuses(batch) == ["accepted", "accepted", "duplicate"]
    assert sum(i.energy_wh for i in batch.intervals) == 100


def test_resubmitting_a_whole_request_counts_nothing_twice() -> None:
    reads = [
        agg(T0, 100),
        agg(T0 + HOUR, 200),
        hist(T0 - 3 * HOUR, T0 - 2 * HOUR, 7),
        agg(T0 + 2 * HOUR, 260),
    ]
    first = run(reads)
    assert statuses(first) == ["accepted"] * 4
    again = then(first, reads)
    assert statuses(again) == ["duplicate"] * 4
    assert again.intervals == ()
    assert again.state == first.state


def test_resubmitted_read_in_other_units_is_still_a_duplicate() -> None:
    first = run([delta(T0, 0), delta(T0 + HOUR, 1500)])
    again = then(first, [RawRead(ReadKind.DELTA, T0 + HOUR, "1.5", unit="kWh")])
    assert statuses(again) == ["duplicate"]


@pytest.mark.parametrize(
    "read",
    [agg(T0 + HOUR, 201), delta(T0 + HOUR, 99)],
    ids=["aggregate", "delta"],
)
def test_same_timestamp_different_value_is_a_conflict(read: RawRead) -> None:
    first = run(
        [
            RawRead(read.kind, T0, 100),
            RawRead(read.kind, T0 + HOUR, 200 if read.kind is ReadKind.AGGREGATE else 100),
        ]
    )
    batch = then(first, [read])
    error = error_of(batch, 0)
    assert isinstance(error, ReadConflict)
    assert error.code == "read_conflict"
    assert error.details["value_wh"] == read.value
    assert error.details["recorded_wh"] in (100, 200)


def test_history_resubmitted_is_duplicate_and_changed_value_a_conflict() -> None:
    first = run([hist(T0, T0 + HOUR, 50)])
    assert statuses(then(first, [hist(T0, T0 + HOUR, 50)])) == ["duplicate"]
    conflict = then(first, [hist(T0, T0 + HOUR, 51)])
    assert isinstance(error_of(conflict, 0), ReadConflict)


# --- kind switching -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [(ReadKind.DELTA, ReadKind.AGGREGATE), (ReadKind.AGGREGATE, ReadKind.DELTA)],
    ids=["delta-to-aggregate", "aggregate-to-delta"],
)
def test_no_direct_switch_between_delta_and_aggregate(first: ReadKind, second: ReadKind) -> None:
    batch = run([RawRead(first, T0, 1), RawRead(second, T0 + HOUR, 2)])
    error = error_of(batch, 1)
    assert isinstance(error, ReadKindSwitchNotAllowed)
    assert (error.previous_kind, error.kind) == (first, second)


def test_switch_through_history_resets_the_baseline() -> None:
    batch = run(
        [
            delta(T0, 0),
            delta(T0 + HOUR, 10),
            hist(T0 + HOUR, T0 + 2 * HOUR, 20),  # moves the frontier
            agg(T0 + 3 * HOUR, 1000),  # baseline only: total at T0+2h unknown
            agg(T0 + 4 * HOUR, 1040),
        ]
    )
    assert statuses(batch) == ["accepted"] * 5
    assert energies(batch) == [None, 10, 20, None, 40]


def test_a_delta_right_after_history_runs_from_the_history_end() -> None:
    """Issue 10: the delta is the energy since the previous read, whose end is known."""
    batch = run([hist(T0, T0 + HOUR, 20), delta(T0 + 2 * HOUR, 30), delta(T0 + 3 * HOUR, 5)])
    assert statuses(batch) == ["accepted"] * 3
    assert batch.intervals == (
        EnergyInterval("dev-1", T0, T0 + HOUR, 20),
        EnergyInterval("dev-1", T0 + HOUR, T0 + 2 * HOUR, 30),
        EnergyInterval("dev-1", T0 + 2 * HOUR, T0 + 3 * HOUR, 5),
    )


def test_a_delta_after_history_in_an_earlier_request_runs_from_the_history_end() -> None:
    stored = run([delta(T0 - 2 * HOUR, 0), hist(T0 - 2 * HOUR, T0, 20)])
    assert stored.state.baseline_kind is None
    batch = then(stored, [delta(T0 + HOUR, 7)])
    assert batch.intervals == (EnergyInterval("dev-1", T0, T0 + HOUR, 7),)


def test_an_aggregate_after_history_still_only_sets_a_baseline() -> None:
    batch = run([hist(T0, T0 + HOUR, 20), agg(T0 + 2 * HOUR, 30), agg(T0 + 3 * HOUR, 35)])
    assert energies(batch) == [20, None, 5]
    assert batch.outcomes[1].baseline_only


def test_a_delta_ending_exactly_at_the_history_end_is_refused() -> None:
    batch = run([hist(T0 - HOUR, T0, 20), delta(T0, 500)])
    error = error_of(batch, 1)
    assert isinstance(error, ReadEndNotAfterPrevious)
    assert error.previous_end == T0


def test_a_delta_after_history_obeys_the_365_day_gap() -> None:
    batch = run([hist(T0 - HOUR, T0, 20), delta(T0 + 366 * 24 * HOUR, 5)], now=NOW_FAR)
    assert isinstance(error_of(batch, 1), ReadGapTooLong)


def test_an_aggregate_exactly_at_the_history_end_makes_a_seamless_switch() -> None:
    batch = run([hist(T0 - HOUR, T0, 20), agg(T0, 500), agg(T0 + HOUR, 530)])
    assert batch.intervals == (
        EnergyInterval("dev-1", T0 - HOUR, T0, 20),
        EnergyInterval("dev-1", T0, T0 + HOUR, 30),
    )


@pytest.mark.parametrize("kind", [ReadKind.DELTA, ReadKind.AGGREGATE], ids=["delta", "aggregate"])
def test_baseline_before_the_history_end_rejected(kind: ReadKind) -> None:
    batch = run([hist(T0 - HOUR, T0, 20), RawRead(kind, T0 - SECOND, 500)])
    error = error_of(batch, 1)
    assert isinstance(error, ReadEndNotAfterPrevious)
    assert error.previous_end == T0
    assert "is before the previous end" in str(error)


def test_delta_then_aggregate_through_back_filling_history() -> None:
    batch = run(
        [
            delta(T0, 0),
            delta(T0 + HOUR, 10),
            hist(T0 - 2 * HOUR, T0 - HOUR, 4),  # back-fill: frontier stays at T0+1h
            agg(T0 + 2 * HOUR, 1000),  # the frontier's baseline is a delta: baseline only
            agg(T0 + 3 * HOUR, 1070),
        ]
    )
    assert energies(batch) == [None, 10, 4, None, 70]


def test_back_filling_history_keeps_the_aggregate_series_going() -> None:
    batch = run([agg(T0, 100), hist(T0 - 2 * HOUR, T0 - HOUR, 9), agg(T0 + HOUR, 130)])
    assert energies(batch) == [None, 9, 30]
    assert batch.intervals[-1].start == T0


# --- history ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "status"),
    [(SECOND, "accepted"), (timedelta(0), "rejected"), (-SECOND, "rejected")],
    ids=["1s", "empty", "reversed"],
)
def test_history_start_before_end(duration: timedelta, status: str) -> None:
    batch = run([hist(T0, T0 + duration, 0)])
    assert statuses(batch) == [status]
    if status == "rejected":
        assert isinstance(error_of(batch, 0), ReadStartNotBeforeEnd)


@pytest.mark.parametrize(
    ("offset", "status"),
    [(timedelta(0), "accepted"), (-SECOND, "rejected")],
    ids=["at-commissioning", "1s-before"],
)
@pytest.mark.parametrize("kind", list(ReadKind), ids=[k.value for k in ReadKind])
def test_nothing_before_commissioning(kind: ReadKind, offset: timedelta, status: str) -> None:
    commissioned = datetime(2025, 3, 1, tzinfo=UTC)
    device = DeviceProfile("dev-1", 10**9, commissioned)
    at = commissioned + offset
    read = hist(at, at + HOUR, 1) if kind is ReadKind.HISTORY else RawRead(kind, at, 1)
    batch = run([read], device=device)
    assert statuses(batch) == [status]
    if status == "rejected":
        error = error_of(batch, 0)
        assert isinstance(error, ReadBeforeCommissioning)
        assert error.commissioning_date == commissioned


@pytest.mark.parametrize(
    ("start", "end", "status"),
    [
        (T0 - HOUR, T0, "accepted"),  # touches the recorded start
        (T0 + 2 * HOUR, T0 + 3 * HOUR, "accepted"),  # touches the recorded end
        (T0 - HOUR, T0 + SECOND, "rejected"),
        (T0 + 2 * HOUR - SECOND, T0 + 3 * HOUR, "rejected"),
        (T0 + 30 * timedelta(minutes=1), T0 + HOUR, "rejected"),  # inside
        (T0 - HOUR, T0 + 3 * HOUR, "rejected"),  # around
    ],
    ids=["touch-before", "touch-after", "1s-into-start", "1s-into-end", "inside", "around"],
)
def test_history_must_not_overlap_recorded_energy(
    start: datetime, end: datetime, status: str
) -> None:
    recorded = InMemoryRecordedReads(intervals=[EnergyInterval("dev-1", T0, T0 + 2 * HOUR, 10)])
    batch = run([hist(start, end, 1)], recorded=recorded)
    assert statuses(batch) == [status]
    if status == "rejected":
        error = error_of(batch, 0)
        assert isinstance(error, HistoryOverlapsRecorded)
        assert error.details["recorded_start"] == T0.isoformat()


def test_history_must_not_overlap_energy_accepted_earlier_in_the_request() -> None:
    batch = run([delta(T0, 0), delta(T0 + 2 * HOUR, 5), hist(T0 + HOUR, T0 + 3 * HOUR, 1)])
    assert statuses(batch) == ["accepted", "accepted", "rejected"]
    assert isinstance(error_of(batch, 2), HistoryOverlapsRecorded)


@pytest.mark.parametrize(
    ("offset", "status", "warned"),
    [(timedelta(0), "accepted", False), (-SECOND, "accepted_with_warning", True)],
    ids=["exactly-3-years", "1s-older"],
)
def test_history_older_than_3_years_is_accepted_with_a_warning(
    offset: timedelta, status: str, warned: bool
) -> None:
    limit = datetime(2022, 6, 15, 12, tzinfo=UTC)  # NOW − 3 calendar years
    batch = run([hist(limit + offset, limit + HOUR, 5)])
    outcome = batch.outcomes[0]
    assert outcome.status.value == status
    assert outcome.interval is not None and outcome.interval.energy_wh == 5
    assert [w.code for w in outcome.warnings] == (["history_older_than_3_years"] if warned else [])


# --- input checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("read", "error"),
    [
        (RawRead(ReadKind.HISTORY, T0, 1), ReadStartMissing),
        (RawRead(ReadKind.DELTA, T0, 1, start=T0 - HOUR), ReadStartNotAllowed),
        (RawRead(ReadKind.DELTA, T0.replace(tzinfo=None), 1), NaiveTimestamp),
        (hist(T0.replace(tzinfo=None), T0 + HOUR, 1), NaiveTimestamp),
        (delta(T0, -1), NegativeValue),
        (RawRead(ReadKind.DELTA, T0, "0.0005", unit="kWh"), FractionalWh),
        (RawRead(ReadKind.DELTA, T0, "1", unit="GWh"), UnknownUnit),
    ],
    ids=[
        "history-no-start",
        "delta-with-start",
        "naive-end",
        "naive-start",
        "negative",
        "fraction",
        "unit",
    ],
)
def test_malformed_read_rejected_and_the_rest_go_on(
    read: RawRead, error: type[ValidationError]
) -> None:
    batch = run([delta(T0 - HOUR, 0), read, delta(T0 + HOUR, 5)])
    assert statuses(batch) == ["accepted", "rejected", "accepted"]
    assert isinstance(error_of(batch, 1), error)
    assert energies(batch)[2] == 5


@pytest.mark.parametrize(
    ("end", "status"),
    [(NOW, "accepted"), (NOW + SECOND, "rejected")],
    ids=["at-now", "1s-after-now"],
)
def test_read_in_the_future_rejected(end: datetime, status: str) -> None:
    batch = run([delta(end, 0)])
    assert statuses(batch) == [status]
    if status == "rejected":
        assert isinstance(error_of(batch, 0), ReadInFuture)


def test_inconsistent_state_is_refused() -> None:
    with pytest.raises(InconsistentReadState):
        DeviceReadState(ReadKind.AGGREGATE, T0, ReadKind.AGGREGATE, None)
    with pytest.raises(InconsistentReadState):
        DeviceReadState(ReadKind.DELTA, None, ReadKind.DELTA, None)


# --- max energy in the validator ----------------------------------------------------------

SMALL = DeviceProfile(
    "dev-1", capacity_w=8760, commissioning_date=T0, yield_kwh_per_kw_year=Decimal(1000)
)


DREC = MaxEnergyPolicy()
DAY = timedelta(days=1)
Y0 = datetime(2024, 1, 1, tzinfo=UTC)  # a year that ends before NOW
YEARLY = DeviceProfile(
    "dev-1", capacity_w=8760, commissioning_date=Y0, yield_kwh_per_kw_year=Decimal(1000)
)


@pytest.mark.parametrize("policy", [PHYSICAL, DREC], ids=["physical-policy", "drec-policy"])
@pytest.mark.parametrize("kind", list(ReadKind), ids=[k.value for k in ReadKind])
def test_every_interval_is_checked_at_the_physical_bound_and_1wh_over(
    kind: ReadKind, policy: MaxEnergyPolicy
) -> None:
    bound_wh = 8760  # 8760 W for one hour

    def reads(energy_wh: int) -> list[RawRead]:
        if kind is ReadKind.HISTORY:
            return [hist(T0, T0 + HOUR, energy_wh)]
        if kind is ReadKind.DELTA:
            return [delta(T0, 0), delta(T0 + HOUR, energy_wh)]
        return [agg(T0, 1000), agg(T0 + HOUR, 1000 + energy_wh)]

    at = run(reads(bound_wh), device=SMALL, policy=policy)
    assert statuses(at)[-1] == "accepted"
    assert energies(at)[-1] == bound_wh
    over = run(reads(bound_wh + 1), device=SMALL, policy=policy)
    error = error_of(over, len(over.outcomes) - 1)
    assert isinstance(error, EnergyExceedsBound)
    assert (error.energy_wh, error.bound_wh, error.rule) == (bound_wh + 1, bound_wh, "physical")


def test_a_sunny_hour_at_80_percent_of_nameplate_is_accepted() -> None:
    """The reason the yield rule is measured over a year: per hour it rejected this."""
    solar = DeviceProfile("solar", 50_000, T0 - 5 * 365 * DAY)
    batch = run(
        [delta(T0, 0)] + [delta(T0 + n * HOUR, 40_000) for n in (1, 2, 3)],
        device=solar,
        policy=DREC,
    )
    assert statuses(batch) == ["accepted"] * 4


def year_of_reads(kind: ReadKind, last_wh: int) -> list[RawRead]:
    """364 days then one day, the year ending at Y0 + 365 d: the yield bound of YEARLY
    there is `YEAR_BOUND_WH`; the first read brings it to 100 Wh under."""
    first_wh = YEAR_BOUND_WH - 100
    if kind is ReadKind.HISTORY:
        return [hist(Y0, Y0 + 364 * DAY, first_wh), hist(Y0 + 364 * DAY, Y0 + 365 * DAY, last_wh)]
    if kind is ReadKind.DELTA:
        return [delta(Y0, 0), delta(Y0 + 364 * DAY, first_wh), delta(Y0 + 365 * DAY, last_wh)]
    return [agg(Y0, 0), agg(Y0 + 364 * DAY, first_wh), agg(Y0 + 365 * DAY, first_wh + last_wh)]


YEAR_BOUND_WH = 10_459_440  # 8760 W × 1000 Wh/W × 1.2 × 0.995 (one year old at the end)


@pytest.mark.parametrize("kind", list(ReadKind), ids=[k.value for k in ReadKind])
def test_yield_rule_counts_intervals_accepted_earlier_in_the_request(kind: ReadKind) -> None:
    assert yearly_yield_bound_wh(YEARLY, Y0 + 365 * DAY, DREC) == YEAR_BOUND_WH
    at = run(year_of_reads(kind, 100), device=YEARLY, policy=DREC)
    assert set(statuses(at)) == {"accepted"}
    over = run(year_of_reads(kind, 101), device=YEARLY, policy=DREC)
    error = error_of(over, len(over.outcomes) - 1)
    assert isinstance(error, EnergyExceedsBound)
    assert (error.energy_wh, error.bound_wh, error.rule) == (
        YEAR_BOUND_WH + 1,
        YEAR_BOUND_WH,
        "drec",
    )
    assert error.interval_wh == 101
    # Under the physical policy the same year passes.
    assert set(statuses(run(year_of_reads(kind, 101), device=YEARLY))) == {"accepted"}


def test_yield_rule_counts_stored_intervals_of_the_trailing_year() -> None:
    reads = year_of_reads(ReadKind.DELTA, 101)
    stored = run(reads[:2], device=YEARLY, policy=DREC)
    assert isinstance(
        error_of(then(stored, reads[2:], device=YEARLY, policy=DREC), 0), EnergyExceedsBound
    )
    # Without the stored year (an empty `TrailingYear`) it would have passed.
    alone = run(reads[2:], state=stored.state, device=YEARLY, policy=DREC)
    assert statuses(alone) == ["accepted"]


def test_a_consumption_meter_gets_the_physical_bound_only() -> None:
    meter = replace(YEARLY, kind=DeviceKind.CONSUMPTION)
    batch = run(year_of_reads(ReadKind.DELTA, 101), device=meter, policy=DREC)
    assert set(statuses(batch)) == {"accepted"}
    over = run([delta(Y0, 0), delta(Y0 + HOUR, 8761)], device=meter, policy=DREC)
    assert error_of(over, 1).details["rule"] == "physical"


# --- properties ---------------------------------------------------------------------------


@st.composite
def aggregate_series(draw: st.DrawFn, *, monotonic: bool) -> list[RawRead]:
    count = draw(st.integers(1, 30))
    steps = draw(st.lists(st.integers(1, 400 * 86400), min_size=count, max_size=count))
    if monotonic:
        increments = draw(st.lists(st.integers(0, 10**6), min_size=count, max_size=count))
        values = [sum(increments[: i + 1]) for i in range(count)]
    else:
        values = draw(st.lists(st.integers(0, 10**6), min_size=count, max_size=count))
    end = datetime(2020, 1, 1, tzinfo=UTC)
    reads = []
    for step, value in zip(steps, values, strict=True):
        end += timedelta(seconds=step)
        reads.append(agg(end, value))
    return reads


NOW_FAR = datetime(2060, 1, 1, tzinfo=UTC)


@given(aggregate_series(monotonic=False))
@settings(max_examples=200, deadline=None)
def test_aggregates_never_produce_negative_energy_and_sum_to_last_minus_first(
    reads: list[RawRead],
) -> None:
    batch = run(reads, now=NOW_FAR)
    assert all(i.energy_wh >= 0 for i in batch.intervals)
    totals = [o.read.value_wh for o in batch.outcomes if o.accepted and o.read is not None]
    assert sum(i.energy_wh for i in batch.intervals) == totals[-1] - totals[0]
    assert totals == sorted(totals)
    # Intervals chain: each starts where the previous ended.
    for before, after in zip(batch.intervals, batch.intervals[1:], strict=False):
        assert before.end == after.start


@given(aggregate_series(monotonic=True))
@settings(max_examples=100, deadline=None)
def test_monotonic_aggregates_are_accepted_unless_the_gap_is_too_long(reads: list[RawRead]) -> None:
    batch = run(reads, now=NOW_FAR)
    for outcome in batch.outcomes:
        assert outcome.status is ReadStatus.ACCEPTED or isinstance(outcome.error, ReadGapTooLong)


@given(aggregate_series(monotonic=False), st.integers(0, 30))
@settings(max_examples=100, deadline=None)
def test_splitting_a_request_in_two_gives_the_same_result(reads: list[RawRead], cut: int) -> None:
    whole = run(reads, now=NOW_FAR)
    first = run(reads[:cut], now=NOW_FAR)
    second = then(first, reads[cut:], now=NOW_FAR)
    assert statuses(first) + statuses(second) == statuses(whole)
    assert first.intervals + second.intervals == whole.intervals
    assert second.state == whole.state


@given(aggregate_series(monotonic=False))
@settings(max_examples=100, deadline=None)
def test_resubmission_is_idempotent(reads: list[RawRead]) -> None:
    first = run(reads, now=NOW_FAR)
    again = then(first, reads, now=NOW_FAR)
    assert again.intervals == ()
    assert again.state == first.state
    for before, after in zip(first.outcomes, again.outcomes, strict=True):
        if before.accepted:
            assert after.status is ReadStatus.DUPLICATE
