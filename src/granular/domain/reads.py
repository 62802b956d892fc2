"""Meter reads become energy intervals.

Three kinds of read (DESIGN.md §4 "Reads"):

- ``history``: an explicit ``[start, end)`` and the energy in it;
- ``delta``: ``end`` and the energy since the previous read's end;
- ``aggregate``: ``end`` and the meter's running total; energy = total − previous total.

`validate_reads` takes one request's reads and checks them **in order**: each read sees
the state left by the previous accepted read of the same request, never a stale one. Each
read gets one `ReadOutcome`: accepted (with its `EnergyInterval`, or baseline-only with
none), accepted with a warning, duplicate (an identical read was already accepted: no
energy, never counted twice), or rejected (the error names the rule and the numbers).
A rejected read changes nothing; the reads after it go on.

State between requests is a `DeviceReadState` (a few columns a storage layer keeps per
device, or rebuilds by folding its accepted reads, in acceptance order, through
`advance_state`) plus a `RecordedReads` lookup of what is already stored.

Rules, in the order they are checked:

1. value is a whole, non-negative number of Wh; timestamps carry a time zone (→ UTC);
   ``start`` is required for history and refused for delta/aggregate;
2. ``end`` is not after `now`;
3. idempotency: a read of the same kind with the same ``end`` (and ``start``) as an
   accepted one is a *duplicate* if its value is the same, a `ReadConflict` otherwise;
4. history: ``start < end``; ``start`` not before commissioning; no overlap with energy
   recorded for the device; ``start`` more than 3 calendar years before `now` → accepted
   with the warning ``history_older_than_3_years``;
5. delta/aggregate: ``end`` not before commissioning; no direct switch between delta and
   aggregate (either may follow or precede history). If the latest recorded end (the
   *frontier*) was set by a read of the same kind (the *baseline*), or it is a delta and
   a history read set the frontier, ``end`` must be after it and the read makes
   ``[frontier, end)``, which may span at most 365 days (exactly 365 is accepted);
   aggregates must not decrease. Otherwise the read only sets the baseline, and ``end``
   must not be before the frontier;
6. every interval passes the max-energy check (`granular.domain.energy`): the physical
   bound, and the yield rule over the trailing year held by a `TrailingYear`.

**Switching from history.** A history read whose end is after the frontier moves the
frontier to its end and clears the baseline. A delta read after it is the energy since
that end, so it makes ``[history end, end)`` (a delta ending exactly at the history end
is refused: its interval would be empty). The meter total at that instant is unknown, so
the next aggregate read only sets a new baseline; sent with ``end`` exactly at the history
end, it makes the switch seamless; sent later, the energy in between can still come as
another history read. A back-filling history read (ending at or before the frontier)
leaves frontier and baseline alone, so a delta/aggregate series goes on. The same
mechanism recovers a device after a gap over 365 days: a history read up to a recent
instant moves the frontier; the next delta read goes on from it, an aggregate read sets a
new baseline.

Delta and aggregate intervals always start at the frontier, so they never overlap
anything recorded; only history needs the overlap lookup.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from granular.domain.energy import (
    DeviceProfile,
    EnergyInterval,
    MaxEnergyPolicy,
    ReadRejected,
    TrailingYear,
    check_max_energy,
)
from granular.domain.units import (
    MAX_WH,
    EnergyUnit,
    NegativeValue,
    ValueTooLarge,
    shift_months,
    to_utc,
    to_wh,
)
from granular.errors import GranularError, ValidationError

MAX_GAP = timedelta(days=365)
HISTORY_WARNING_AGE_MONTHS = 36  # 3 calendar years


class ReadKind(StrEnum):
    HISTORY = "history"
    DELTA = "delta"
    AGGREGATE = "aggregate"


_SERIES = (ReadKind.DELTA, ReadKind.AGGREGATE)


# --- errors -------------------------------------------------------------------------------


class ReadStartMissing(ReadRejected):
    code = "read_start_missing"

    def __init__(self, kind: ReadKind) -> None:
        super().__init__(
            f"start: a {kind.value} read needs a start timestamp",
            {"field": "starttimestamp", "kind": kind.value},
        )
        self.kind = kind


class ReadStartNotAllowed(ReadRejected):
    code = "read_start_not_allowed"

    def __init__(self, kind: ReadKind, start: datetime) -> None:
        super().__init__(
            f"start: a {kind.value} read has no start (got {start.isoformat()}); "
            "it runs from the previous read's end",
            {"field": "starttimestamp", "kind": kind.value, "value": start.isoformat()},
        )
        self.kind = kind
        self.start = start


class ReadStartNotBeforeEnd(ReadRejected):
    code = "read_start_not_before_end"

    def __init__(self, start: datetime, end: datetime) -> None:
        super().__init__(
            f"start: {start.isoformat()} is not before end {end.isoformat()}",
            {"field": "starttimestamp", "start": start.isoformat(), "end": end.isoformat()},
        )
        self.start = start
        self.end = end


class ReadInFuture(ReadRejected):
    code = "read_in_future"

    def __init__(self, device: str, end: datetime, now: datetime) -> None:
        super().__init__(
            f"{device}: end {end.isoformat()} is after now ({now.isoformat()})",
            {
                "device": device,
                "field": "endtimestamp",
                "value": end.isoformat(),
                "now": now.isoformat(),
            },
        )
        self.device = device
        self.end = end
        self.now = now


class ReadBeforeCommissioning(ReadRejected):
    code = "read_before_commissioning"

    def __init__(
        self, device: str, field: str, value: datetime, commissioning_date: datetime
    ) -> None:
        super().__init__(
            f"{device}: {field} {value.isoformat()} is before the commissioning date "
            f"{commissioning_date.isoformat()}",
            {
                "device": device,
                "field": field,
                "value": value.isoformat(),
                "commissioning_date": commissioning_date.isoformat(),
            },
        )
        self.device = device
        self.field = field
        self.value = value
        self.commissioning_date = commissioning_date


class HistoryOverlapsRecorded(ReadRejected):
    code = "history_overlaps_recorded"

    def __init__(
        self, device: str, start: datetime, end: datetime, recorded: EnergyInterval
    ) -> None:
        super().__init__(
            f"{device}: history [{start.isoformat()}, {end.isoformat()}) overlaps recorded "
            f"energy [{recorded.start.isoformat()}, {recorded.end.isoformat()}) "
            f"of {recorded.energy_wh} Wh",
            {
                "device": device,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "recorded_start": recorded.start.isoformat(),
                "recorded_end": recorded.end.isoformat(),
                "recorded_energy_wh": recorded.energy_wh,
            },
        )
        self.device = device
        self.start = start
        self.end = end
        self.recorded = recorded


class ReadKindSwitchNotAllowed(ReadRejected):
    code = "read_kind_switch_not_allowed"

    def __init__(self, device: str, previous_kind: ReadKind, kind: ReadKind) -> None:
        super().__init__(
            f"{device}: cannot switch from {previous_kind.value} to {kind.value} reads "
            "directly; only to or from history",
            {"device": device, "previous_kind": previous_kind.value, "kind": kind.value},
        )
        self.device = device
        self.previous_kind = previous_kind
        self.kind = kind


class ReadEndNotAfterPrevious(ReadRejected):
    code = "read_end_not_after_previous"

    def __init__(self, device: str, end: datetime, previous_end: datetime) -> None:
        super().__init__(
            f"{device}: end {end.isoformat()} is "
            f"{'before' if end < previous_end else 'not after'} the previous end "
            f"{previous_end.isoformat()}",
            {
                "device": device,
                "field": "endtimestamp",
                "value": end.isoformat(),
                "previous_end": previous_end.isoformat(),
            },
        )
        self.device = device
        self.end = end
        self.previous_end = previous_end


class ReadGapTooLong(ReadRejected):
    code = "read_gap_too_long"

    def __init__(self, device: str, previous_end: datetime, end: datetime) -> None:
        gap = end - previous_end
        super().__init__(
            f"{device}: {gap} between the previous read ({previous_end.isoformat()}) and "
            f"this one ({end.isoformat()}) exceeds {MAX_GAP.days} days",
            {
                "device": device,
                "previous_end": previous_end.isoformat(),
                "end": end.isoformat(),
                "gap_seconds": int(gap.total_seconds()),
                "max_gap_days": MAX_GAP.days,
            },
        )
        self.device = device
        self.previous_end = previous_end
        self.end = end


class AggregateDecreased(ReadRejected):
    code = "aggregate_decreased"

    def __init__(self, device: str, end: datetime, value_wh: int, previous_wh: int) -> None:
        super().__init__(
            f"{device}: aggregate {value_wh} Wh at {end.isoformat()} is below the previous "
            f"total {previous_wh} Wh; totals must not decrease",
            {
                "device": device,
                "field": "value",
                "end": end.isoformat(),
                "value_wh": value_wh,
                "previous_wh": previous_wh,
            },
        )
        self.device = device
        self.end = end
        self.value_wh = value_wh
        self.previous_wh = previous_wh


class ReadConflict(ReadRejected):
    code = "read_conflict"

    def __init__(self, device: str, read: MeterRead, recorded: MeterRead) -> None:
        super().__init__(
            f"{device}: a {read.kind.value} read ending {read.end.isoformat()} was already "
            f"accepted with {recorded.value_wh} Wh; this one says {read.value_wh} Wh",
            {
                "device": device,
                "kind": read.kind.value,
                "end": read.end.isoformat(),
                "value_wh": read.value_wh,
                "recorded_wh": recorded.value_wh,
            },
        )
        self.device = device
        self.read = read
        self.recorded = recorded


class InconsistentReadState(GranularError):
    """A `DeviceReadState` built by a caller contradicts itself (a bug, not bad input)."""

    code = "inconsistent_read_state"


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawRead:
    """A read as submitted: any unit, any time zone. `parse_read` normalises it."""

    kind: ReadKind
    end: datetime
    value: Decimal | int | str
    start: datetime | None = None
    unit: EnergyUnit | str = EnergyUnit.WH


@dataclass(frozen=True, slots=True)
class MeterRead:
    """A read in normal form: UTC timestamps, `value_wh` a whole number of Wh.

    For history `value_wh` is the energy in `[start, end)`; for delta the energy since the
    previous end; for aggregate the meter total at `end`.
    """

    kind: ReadKind
    end: datetime
    value_wh: int
    start: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ReadKind(self.kind))
        object.__setattr__(self, "end", to_utc(self.end, field="endtimestamp"))
        if self.kind is ReadKind.HISTORY:
            if self.start is None:
                raise ReadStartMissing(self.kind)
            object.__setattr__(self, "start", to_utc(self.start, field="starttimestamp"))
        elif self.start is not None:
            raise ReadStartNotAllowed(self.kind, self.start)
        if self.value_wh < 0:
            raise NegativeValue("value", self.value_wh)
        if self.value_wh > MAX_WH:
            raise ValueTooLarge("value", self.value_wh, MAX_WH)


def parse_read(raw: RawRead) -> MeterRead:
    """Normalise a submitted read (units → Wh exactly, timestamps → UTC) or raise."""
    return MeterRead(
        kind=ReadKind(raw.kind),
        end=raw.end,
        value_wh=to_wh(raw.value, raw.unit, field="value"),
        start=raw.start,
    )


@dataclass(frozen=True, slots=True)
class DeviceReadState:
    """What validation needs to remember about a device between requests.

    - `last_kind`: kind of the latest accepted read (for the switching rule);
    - `last_end`: the frontier, the latest `end` of any accepted read;
    - `baseline_kind`: delta/aggregate when a read of that kind set `last_end` (the next
      read of the same kind makes an interval from it); None when a history read set it;
    - `last_aggregate_wh`: meter total at `last_end` when `baseline_kind` is aggregate.

    Keep it as one row per device (the batch result carries the new one), or rebuild it
    with ``functools.reduce(advance_state, accepted_reads, DeviceReadState())``.
    """

    last_kind: ReadKind | None = None
    last_end: datetime | None = None
    baseline_kind: ReadKind | None = None
    last_aggregate_wh: int | None = None

    def __post_init__(self) -> None:
        if self.last_end is not None:
            object.__setattr__(self, "last_end", to_utc(self.last_end, field="last_end"))
        if self.baseline_kind is ReadKind.HISTORY:
            raise InconsistentReadState("baseline_kind is delta, aggregate or None")
        if self.baseline_kind is not None and self.last_end is None:
            raise InconsistentReadState("a baseline needs last_end")
        if (self.baseline_kind is ReadKind.AGGREGATE) != (self.last_aggregate_wh is not None):
            raise InconsistentReadState(
                "last_aggregate_wh is set exactly when the baseline is aggregate"
            )


def advance_state(state: DeviceReadState, read: MeterRead) -> DeviceReadState:
    """The state after `read` was accepted (validation is `validate_reads`' job)."""
    if read.kind is ReadKind.HISTORY:
        if state.last_end is None or read.end > state.last_end:
            return DeviceReadState(last_kind=read.kind, last_end=read.end)
        return replace(state, last_kind=read.kind)
    return DeviceReadState(
        last_kind=read.kind,
        last_end=read.end,
        baseline_kind=read.kind,
        last_aggregate_wh=read.value_wh if read.kind is ReadKind.AGGREGATE else None,
    )


class RecordedReads(Protocol):
    """What is already stored for one device (accepted reads and their intervals)."""

    def find_read(self, kind: ReadKind, end: datetime) -> MeterRead | None:
        """The accepted read of `kind` ending at `end`, if any."""
        ...

    def find_overlap(self, start: datetime, end: datetime) -> EnergyInterval | None:
        """A recorded interval overlapping `[start, end)`, if any."""
        ...


class InMemoryRecordedReads:
    """`RecordedReads` over values in memory.

    A storage layer can preload what one request can touch (reads with the request's end
    timestamps, intervals overlapping the span of its history reads) and hand this over.
    Recorded intervals never overlap each other (the rules guarantee it), which is what
    makes the single bisect in `find_overlap` exact.
    """

    def __init__(
        self, reads: Iterable[MeterRead] = (), intervals: Iterable[EnergyInterval] = ()
    ) -> None:
        self._reads: dict[tuple[ReadKind, datetime], MeterRead] = {}
        self._starts: list[datetime] = []
        self._intervals: list[EnergyInterval] = []
        for read in reads:
            self.add_read(read)
        for interval in sorted(intervals, key=lambda i: i.start):
            self.add_interval(interval)

    def add_read(self, read: MeterRead) -> None:
        self._reads[(read.kind, read.end)] = read

    def add_interval(self, interval: EnergyInterval) -> None:
        index = bisect_left(self._starts, interval.start)
        self._starts.insert(index, interval.start)
        self._intervals.insert(index, interval)

    def find_read(self, kind: ReadKind, end: datetime) -> MeterRead | None:
        return self._reads.get((kind, end))

    def find_overlap(self, start: datetime, end: datetime) -> EnergyInterval | None:
        # The interval with the latest start before `end` is the only candidate.
        index = bisect_left(self._starts, end)
        if index and self._intervals[index - 1].end > start:
            return self._intervals[index - 1]
        return None


class ReadStatus(StrEnum):
    ACCEPTED = "accepted"
    ACCEPTED_WITH_WARNING = "accepted_with_warning"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ReadWarning:
    code: str
    message: str
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReadOutcome:
    """What became of the read at `index` of the request.

    `read` is the normal form (None if the read could not be parsed); `interval` the energy
    it produced (None for a baseline-only read, a duplicate or a rejection).
    """

    index: int
    status: ReadStatus
    read: MeterRead | None = None
    interval: EnergyInterval | None = None
    warnings: tuple[ReadWarning, ...] = ()
    error: ValidationError | None = None

    @property
    def accepted(self) -> bool:
        return self.status in (ReadStatus.ACCEPTED, ReadStatus.ACCEPTED_WITH_WARNING)

    @property
    def baseline_only(self) -> bool:
        return self.accepted and self.interval is None


@dataclass(frozen=True, slots=True)
class ReadBatch:
    """The outcome of every read, and the device state after the accepted ones."""

    outcomes: tuple[ReadOutcome, ...]
    state: DeviceReadState

    @property
    def accepted_reads(self) -> tuple[MeterRead, ...]:
        """Accepted reads in acceptance order (store these; duplicates are not repeated)."""
        return tuple(o.read for o in self.outcomes if o.accepted and o.read is not None)

    @property
    def intervals(self) -> tuple[EnergyInterval, ...]:
        return tuple(o.interval for o in self.outcomes if o.interval is not None)


# --- validation ---------------------------------------------------------------------------


def validate_reads(
    reads: Iterable[RawRead | MeterRead],
    *,
    device: DeviceProfile,
    state: DeviceReadState,
    recorded: RecordedReads,
    year: TrailingYear,
    policy: MaxEnergyPolicy,
    now: datetime,
) -> ReadBatch:
    """Validate one request's reads for `device`, in order, against each other.

    `state`, `recorded` and `year` (the device's stored energy in the trailing year of
    every end in the request, for the yield rule) describe what was accepted before this
    request; reads accepted earlier in the request are seen by later ones (`year` is
    copied, not changed). Returns one outcome per read and the state to store. Never
    raises for a bad read; it is rejected with its error.
    """
    now = to_utc(now, field="now")
    year = year.copy()
    history_warning_before = shift_months(now, -HISTORY_WARNING_AGE_MONTHS)
    this_request = InMemoryRecordedReads()
    outcomes: list[ReadOutcome] = []
    for index, submitted in enumerate(reads):
        read: MeterRead | None = None
        try:
            read = submitted if isinstance(submitted, MeterRead) else parse_read(submitted)
            outcome = _validate_one(
                index,
                read,
                device=device,
                state=state,
                recorded=(this_request, recorded),
                year=year,
                policy=policy,
                now=now,
                history_warning_before=history_warning_before,
            )
        except ValidationError as error:  # per-read boundary: the read is rejected, go on
            outcomes.append(ReadOutcome(index, ReadStatus.REJECTED, read=read, error=error))
            continue
        outcomes.append(outcome)
        if outcome.accepted:
            assert outcome.read is not None
            state = advance_state(state, outcome.read)
            this_request.add_read(outcome.read)
            if outcome.interval is not None:
                this_request.add_interval(outcome.interval)
                year.add(outcome.interval)
    return ReadBatch(tuple(outcomes), state)


def _validate_one(
    index: int,
    read: MeterRead,
    *,
    device: DeviceProfile,
    state: DeviceReadState,
    recorded: tuple[RecordedReads, RecordedReads],
    year: TrailingYear,
    policy: MaxEnergyPolicy,
    now: datetime,
    history_warning_before: datetime,
) -> ReadOutcome:
    name = device.device
    if read.end > now:
        raise ReadInFuture(name, read.end, now)

    for source in recorded:
        previous = source.find_read(read.kind, read.end)
        if previous is not None and previous.start == read.start:
            if previous.value_wh == read.value_wh:
                return ReadOutcome(index, ReadStatus.DUPLICATE, read=read)
            raise ReadConflict(name, read, previous)

    if read.kind is ReadKind.HISTORY:
        return _validate_history(
            index, read, device, recorded, year, policy, history_warning_before
        )

    if read.end < device.commissioning_date:
        raise ReadBeforeCommissioning(name, "endtimestamp", read.end, device.commissioning_date)
    if state.last_kind in _SERIES and state.last_kind is not read.kind:
        raise ReadKindSwitchNotAllowed(name, state.last_kind, read.kind)
    if state.last_end is None:
        return ReadOutcome(index, ReadStatus.ACCEPTED, read=read)
    # A delta is the energy since the frontier, whichever read set it; a history read's
    # end is known, so a delta right after history makes [history end, end) (issue 10).
    # An aggregate after history only sets a baseline: the meter total there is unknown.
    from_frontier = state.baseline_kind is read.kind or (
        read.kind is ReadKind.DELTA and state.baseline_kind is None
    )
    if not from_frontier:
        # Only sets a new baseline: it may sit exactly at the frontier (a seamless switch
        # from history), never before it.
        if read.end < state.last_end:
            raise ReadEndNotAfterPrevious(name, read.end, state.last_end)
        return ReadOutcome(index, ReadStatus.ACCEPTED, read=read)
    if read.end <= state.last_end:
        raise ReadEndNotAfterPrevious(name, read.end, state.last_end)
    if read.end - state.last_end > MAX_GAP:
        raise ReadGapTooLong(name, state.last_end, read.end)
    if read.kind is ReadKind.AGGREGATE:
        assert state.last_aggregate_wh is not None
        if read.value_wh < state.last_aggregate_wh:
            raise AggregateDecreased(name, read.end, read.value_wh, state.last_aggregate_wh)
        energy_wh = read.value_wh - state.last_aggregate_wh
    else:
        energy_wh = read.value_wh
    interval = EnergyInterval(name, state.last_end, read.end, energy_wh)
    check_max_energy(interval, device, policy, year)
    return ReadOutcome(index, ReadStatus.ACCEPTED, read=read, interval=interval)


def _validate_history(
    index: int,
    read: MeterRead,
    device: DeviceProfile,
    recorded: tuple[RecordedReads, RecordedReads],
    year: TrailingYear,
    policy: MaxEnergyPolicy,
    history_warning_before: datetime,
) -> ReadOutcome:
    name = device.device
    start = read.start
    assert start is not None  # MeterRead guarantees it for history
    if start >= read.end:
        raise ReadStartNotBeforeEnd(start, read.end)
    if start < device.commissioning_date:
        raise ReadBeforeCommissioning(name, "starttimestamp", start, device.commissioning_date)
    for source in recorded:
        overlap = source.find_overlap(start, read.end)
        if overlap is not None:
            raise HistoryOverlapsRecorded(name, start, read.end, overlap)
    interval = EnergyInterval(name, start, read.end, read.value_wh)
    check_max_energy(interval, device, policy, year)
    if start < history_warning_before:
        warning = ReadWarning(
            "history_older_than_3_years",
            f"{name}: history starting {start.isoformat()} is older than 3 years "
            f"(before {history_warning_before.isoformat()}); accepted, flagged",
            {"start": start.isoformat(), "limit": history_warning_before.isoformat()},
        )
        return ReadOutcome(
            index,
            ReadStatus.ACCEPTED_WITH_WARNING,
            read=read,
            interval=interval,
            warnings=(warning,),
        )
    return ReadOutcome(index, ReadStatus.ACCEPTED, read=read, interval=interval)
