"""Meter reads: raw submissions kept as received, accepted reads in normal form, energy
intervals, and one read-state row per device."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from granular.adapters.db.base import Base, as_utc
from granular.adapters.db.devices import DeviceRow
from granular.domain.energy import (
    YIELD_WINDOW,
    DaySplit,
    EnergyInterval,
    TrailingYear,
    energy_by_start_day,
    split_at_midnights,
)
from granular.domain.reads import DeviceReadState, InMemoryRecordedReads, MeterRead, ReadKind


class ReadSubmissionRow(Base):
    """One POST /meter-reads request as received, for audit. `device_revision_id` is the
    device revision whose parameters validated it (None for submissions stored before
    device revisions existed)."""

    __tablename__ = "meter_read_submissions"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(16))
    unit: Mapped[str] = mapped_column(String(8))
    payload: Mapped[Any] = mapped_column(JSON)
    read_count: Mapped[int] = mapped_column(Integer)
    accepted_count: Mapped[int] = mapped_column(Integer)
    device_revision_id: Mapped[int | None] = mapped_column(ForeignKey("device_revisions.id"))


class MeterReadRow(Base):
    """An accepted read in normal form; the key that makes re-submission idempotent."""

    __tablename__ = "meter_reads"
    __table_args__ = (UniqueConstraint("device_id", "kind", "end_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    kind: Mapped[str] = mapped_column(String(16))
    start_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    value_wh: Mapped[int] = mapped_column(BigInteger)
    submission_id: Mapped[int] = mapped_column(ForeignKey("meter_read_submissions.id"))


class EnergyIntervalRow(Base):
    """`[start_at, end_at)` and its energy for one device; intervals never overlap."""

    __tablename__ = "energy_intervals"
    __table_args__ = (
        UniqueConstraint("device_id", "start_at"),
        Index("ix_energy_intervals_device_end", "device_id", "end_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    start_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    source_kind: Mapped[str] = mapped_column(String(16))
    submission_id: Mapped[int] = mapped_column(ForeignKey("meter_read_submissions.id"))


class EnergyDayRow(Base):
    """The daily rollup: per device and UTC day, the total Wh of the intervals starting on
    that day (whole intervals, never prorated: one that crosses midnight counts on its
    start day). Written in the transaction that stores the intervals, so it always equals
    `SELECT sum(energy_wh) ... GROUP BY device_id, day of start_at` over `energy_intervals`;
    it lets the yield rule sum a year from at most 365 rows."""

    __tablename__ = "energy_days"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    energy_wh: Mapped[int] = mapped_column(BigInteger)


class DeviceReadStateRow(Base):
    __tablename__ = "device_read_states"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    last_kind: Mapped[str | None] = mapped_column(String(16))
    last_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    baseline_kind: Mapped[str | None] = mapped_column(String(16))
    last_aggregate_wh: Mapped[int | None] = mapped_column(BigInteger)


def lock_read_state(*, session: Session, device_id: int) -> DeviceReadState:
    """The device's read state, locked until the transaction ends. Creates the row on the
    device's first submission.

    The lock is a no-op UPDATE of the device's row, which always exists: on PostgreSQL it
    takes the row lock (no key columns change, so inserts referencing the device are not
    blocked), and on SQLite it starts the write transaction now; the driver would otherwise
    begin it at the first INSERT, after this request had read a state that another writer
    is about to change."""
    session.execute(
        update(DeviceRow)
        .where(DeviceRow.id == device_id)
        .values(updated_at=DeviceRow.updated_at)
        .execution_options(synchronize_session=False)
    )
    query = select(DeviceReadStateRow).where(DeviceReadStateRow.device_id == device_id)
    row = session.scalar(query)
    if row is None:
        session.add(DeviceReadStateRow(device_id=device_id))
        session.flush()
        return DeviceReadState()
    return DeviceReadState(
        last_kind=ReadKind(row.last_kind) if row.last_kind else None,
        last_end=as_utc(row.last_end) if row.last_end else None,
        baseline_kind=ReadKind(row.baseline_kind) if row.baseline_kind else None,
        last_aggregate_wh=row.last_aggregate_wh,
    )


def save_read_state(*, session: Session, device_id: int, state: DeviceReadState) -> None:
    row = session.get(DeviceReadStateRow, device_id)
    assert row is not None, "lock_read_state creates the row first"
    row.last_kind = state.last_kind.value if state.last_kind else None
    row.last_end = state.last_end
    row.baseline_kind = state.baseline_kind.value if state.baseline_kind else None
    row.last_aggregate_wh = state.last_aggregate_wh


def recorded_for(
    *,
    session: Session,
    device_id: int,
    device_key: str,
    ends: Sequence[datetime],
    history_span: tuple[datetime, datetime] | None,
) -> InMemoryRecordedReads:
    """What one request can touch: the stored reads at its end timestamps, and the stored
    intervals overlapping the span of its history reads."""
    reads: list[MeterRead] = []
    for chunk in _chunks(sorted(set(ends)), 500):
        rows = session.execute(
            select(
                MeterReadRow.kind, MeterReadRow.end_at, MeterReadRow.value_wh, MeterReadRow.start_at
            ).where(MeterReadRow.device_id == device_id, MeterReadRow.end_at.in_(chunk))
        )
        reads.extend(
            MeterRead(ReadKind(kind), as_utc(end), value, as_utc(start) if start else None)
            for kind, end, value, start in rows
        )
    intervals: list[EnergyInterval] = []
    if history_span is not None:
        start, end = history_span
        rows = session.execute(
            select(
                EnergyIntervalRow.start_at, EnergyIntervalRow.end_at, EnergyIntervalRow.energy_wh
            ).where(
                EnergyIntervalRow.device_id == device_id,
                EnergyIntervalRow.start_at < end,
                EnergyIntervalRow.end_at > start,
            )
        )
        intervals = [EnergyInterval(device_key, as_utc(s), as_utc(e), wh) for s, e, wh in rows]
    return InMemoryRecordedReads(reads, intervals)


def trailing_year(
    *, session: Session, device_id: int, device_key: str, first_end: datetime, last_end: datetime
) -> TrailingYear:
    """The device's stored energy in the 365 days ending at any end in
    `[first_end, last_end]`, for the yield rule, in four queries per request whatever its
    size or the number of intervals stored in its year, each a bounded range of a key:

    - the total of the intervals starting in the core [last_end − 365 d, first_end): the
      daily rollup's rows of the core's whole UTC days (at most 365), plus the intervals
      starting on its partial first and last day, summed exactly (`_started_wh`);
    - the intervals starting in [first_end − 365 d, core start) or [first_end, last_end);
    - the one interval (if any) straddling first_end − 365 d, and the one straddling the
      core's end: the latest interval starting before each instant. The second, when it
      starts in the core, is an edge interval counted in the core's total, so it is taken
      off again: the core's total is then that of the intervals wholly inside it
      (intervals never overlap, so no other one starting in it ends past it).
    """
    window_start = first_end - YIELD_WINDOW
    core_start, core_end = TrailingYear.core(first_end, last_end)
    of_device = EnergyIntervalRow.device_id == device_id
    split = split_at_midnights(core_start, core_end)
    core_wh = _started_wh(session=session, device_id=device_id, split=split)
    columns = (EnergyIntervalRow.start_at, EnergyIntervalRow.end_at, EnergyIntervalRow.energy_wh)
    rows = list(
        session.execute(
            select(*columns).where(
                of_device,
                or_(
                    (EnergyIntervalRow.start_at >= window_start)
                    & (EnergyIntervalRow.start_at < core_start),
                    (EnergyIntervalRow.start_at >= core_end)
                    & (EnergyIntervalRow.start_at < last_end),
                ),
            )
        )
    )
    for before, keep_from in ((window_start, None), (core_end, core_start)):
        if keep_from is not None and keep_from >= before:
            continue  # an empty core: its end is the first range's end, nothing straddles
        row = session.execute(
            select(*columns)
            .where(of_device, EnergyIntervalRow.start_at < before)
            .order_by(EnergyIntervalRow.start_at.desc())
            .limit(1)
        ).first()
        if row is None:
            continue
        start, end = as_utc(row[0]), as_utc(row[1])
        if end > before and (keep_from is None or start >= keep_from):
            rows.append(row)
            if keep_from is not None:
                core_wh -= int(row[2])  # it starts in the core, yet ends past it
    intervals = [EnergyInterval(device_key, as_utc(s), as_utc(e), wh) for s, e, wh in rows]
    return TrailingYear(covers=(first_end, last_end), core_wh=core_wh, intervals=intervals)


def _started_wh(*, session: Session, device_id: int, split: DaySplit) -> int:
    """Σ energy of the device's intervals starting in the split span, in one statement: the
    rollup's rows of its whole days, and the intervals starting in its partial days. Every
    term is a range of a key's prefix, (device_id, day) or (device_id, start_at); no filter
    on `end_at`, which SQLite would serve from the (device_id, end_at) index instead, over
    every interval of the device ending before the span's end."""
    parts = []
    if split.days is not None:
        parts.append(
            select(func.coalesce(func.sum(EnergyDayRow.energy_wh), 0))
            .where(
                EnergyDayRow.device_id == device_id,
                EnergyDayRow.day >= split.days[0],
                EnergyDayRow.day < split.days[1],
            )
            .scalar_subquery()
        )
    if split.partial:
        parts.append(
            select(func.coalesce(func.sum(EnergyIntervalRow.energy_wh), 0))
            .where(
                EnergyIntervalRow.device_id == device_id,
                or_(
                    *(
                        (EnergyIntervalRow.start_at >= start) & (EnergyIntervalRow.start_at < end)
                        for start, end in split.partial
                    )
                ),
            )
            .scalar_subquery()
        )
    if not parts:
        return 0
    sums = session.execute(select(*parts)).one()
    return sum(int(wh or 0) for wh in sums)


def _chunks(items: list[datetime], size: int) -> Iterable[list[datetime]]:
    for index in range(0, len(items), size):
        yield items[index : index + size]


def _as_received(value: Any) -> Any:
    """A request body as JSON the column can hold. The API parses numbers with a fraction as
    `Decimal`; one a float holds exactly is stored as that number, any other as its exact
    decimal text, so the stored body says what was sent, digit for digit."""
    if isinstance(value, dict):
        return {key: _as_received(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_received(item) for item in value]
    if isinstance(value, Decimal):
        if value.is_finite():
            as_float = float(value)
            if Decimal(repr(as_float)) == value:
                return as_float
        return str(value)
    return value


def add_submission(
    *,
    session: Session,
    device_id: int,
    api_key_id: int | None,
    received_at: datetime,
    kind: str,
    unit: str,
    payload: Any,
    read_count: int,
    accepted_count: int,
    device_revision_id: int | None,
) -> int:
    row = ReadSubmissionRow(
        device_id=device_id,
        api_key_id=api_key_id,
        received_at=received_at,
        kind=kind,
        unit=unit,
        payload=_as_received(payload),
        read_count=read_count,
        accepted_count=accepted_count,
        device_revision_id=device_revision_id,
    )
    session.add(row)
    session.flush()
    return row.id


def add_reads_and_intervals(
    *,
    session: Session,
    device_id: int,
    submission_id: int,
    reads: Sequence[MeterRead],
    intervals: Sequence[tuple[EnergyInterval, ReadKind]],
) -> None:
    """Bulk inserts (one statement each) of the accepted reads and their intervals, and the
    intervals' energy added to the daily rollup (one upsert)."""
    if reads:
        session.execute(
            insert(MeterReadRow),
            [
                {
                    "device_id": device_id,
                    "kind": read.kind.value,
                    "start_at": read.start,
                    "end_at": read.end,
                    "value_wh": read.value_wh,
                    "submission_id": submission_id,
                }
                for read in reads
            ],
        )
    if intervals:
        session.execute(
            insert(EnergyIntervalRow),
            [
                {
                    "device_id": device_id,
                    "start_at": interval.start,
                    "end_at": interval.end,
                    "energy_wh": interval.energy_wh,
                    "source_kind": kind.value,
                    "submission_id": submission_id,
                }
                for interval, kind in intervals
            ],
        )
        _add_to_days(
            session=session,
            device_id=device_id,
            by_day=energy_by_start_day(interval for interval, _ in intervals),
        )


def _add_to_days(*, session: Session, device_id: int, by_day: Mapping[date, int]) -> None:
    """`by_day`'s Wh added to the device's rollup rows, a row created for a new day."""
    rows = [
        {"device_id": device_id, "day": day, "energy_wh": wh} for day, wh in sorted(by_day.items())
    ]
    if not rows:
        return
    keys = [EnergyDayRow.device_id, EnergyDayRow.day]
    if session.get_bind().dialect.name == "postgresql":
        on_pg = postgresql_insert(EnergyDayRow)
        added = {"energy_wh": EnergyDayRow.energy_wh + on_pg.excluded.energy_wh}
        session.execute(on_pg.on_conflict_do_update(index_elements=keys, set_=added), rows)
        return
    on_sqlite = sqlite_insert(EnergyDayRow)
    added = {"energy_wh": EnergyDayRow.energy_wh + on_sqlite.excluded.energy_wh}
    session.execute(on_sqlite.on_conflict_do_update(index_elements=keys, set_=added), rows)


def list_intervals(
    *,
    session: Session,
    device_id: int,
    device_key: str,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[EnergyInterval]:
    """Intervals overlapping `[start, end)`, oldest first."""
    rows = session.execute(
        select(EnergyIntervalRow.start_at, EnergyIntervalRow.end_at, EnergyIntervalRow.energy_wh)
        .where(
            EnergyIntervalRow.device_id == device_id,
            EnergyIntervalRow.start_at < end,
            EnergyIntervalRow.end_at > start,
        )
        .order_by(EnergyIntervalRow.start_at)
        .limit(limit)
    )
    return [EnergyInterval(device_key, as_utc(s), as_utc(e), wh) for s, e, wh in rows]


@dataclass(frozen=True, slots=True)
class SpanEnergy:
    """What is stored of some devices' energy in a span `[start, end)`: the total of the
    intervals lying wholly inside it, summed by the database, and the intervals that
    overlap it but stick out of it, whose in-span share the caller works out. A device's
    intervals never overlap, so it has at most two of these: one across `start`, one
    across `end` (or a single one across both)."""

    inside_wh: int
    straddling: tuple[EnergyInterval, ...]


def energy_between(
    *, session: Session, device_ids: Collection[int], start: datetime, end: datetime
) -> SpanEnergy:
    """The devices' energy in `[start, end)`: whole intervals summed in SQL, the few that
    cross `start` or `end` fetched as they are (their `device` is the device id as text)."""
    if not device_ids or start >= end:
        return SpanEnergy(0, ())
    ids = sorted(device_ids)
    overlapping = (
        EnergyIntervalRow.device_id.in_(ids),
        EnergyIntervalRow.start_at < end,
        EnergyIntervalRow.end_at > start,
    )
    inside_wh = session.scalar(
        select(func.coalesce(func.sum(EnergyIntervalRow.energy_wh), 0)).where(
            *overlapping, EnergyIntervalRow.start_at >= start, EnergyIntervalRow.end_at <= end
        )
    )
    rows = session.execute(
        select(
            EnergyIntervalRow.device_id,
            EnergyIntervalRow.start_at,
            EnergyIntervalRow.end_at,
            EnergyIntervalRow.energy_wh,
        )
        .where(
            *overlapping,
            or_(EnergyIntervalRow.start_at < start, EnergyIntervalRow.end_at > end),
        )
        .order_by(EnergyIntervalRow.device_id, EnergyIntervalRow.start_at)
    )
    straddling = tuple(
        EnergyInterval(str(device_id), as_utc(s), as_utc(e), wh) for device_id, s, e, wh in rows
    )
    return SpanEnergy(int(inside_wh or 0), straddling)
