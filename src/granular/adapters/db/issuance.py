"""Issuance tables (issue 7 §3) and every SQL statement that touches them.

- `issuance_items`: one certificate to be, unique on (reservation, device, window start,
  sequence): the idempotency key. `state`: pending (in a batch, not yet confirmed), issued,
  failed (the physical re-check, or a batch the registry reports issued but whose events
  differ: final, with the reason), leftover (beyond the target without authority),
  reverted (isolated from a reverted batch, with the reason: its volume is planned again)
  or retried (a reverted item whose volume the planner has planned again). Every item keeps
  its quantity, so a window's items other than reverted and retried ones sum to the energy
  accounted for it. Rows are never deleted.
- `issuance_batches`: one issueBatch transaction: its `batchId`, the outbox key, the gas
  tier, its state (pending, confirmed, split = reverted and bisected, failed = a reverted
  single item). A split batch's items move to its two halves (`parent_id` keeps the trail).
- `issued_certificates`: the on-chain certificate id of each issued item, its transaction
  hash (the "transaction certificate id") and data hash.
- `issuance_provenance`: per item, what it was made from (intervals, raw read submissions,
  the device revision, the rule and numbers, the window, the reservation's state), kept for
  as long as the certificate.
- `issuance_reservation_state`: per reservation, how far windows were considered (so a
  window without data is warned about once) and when the target was reached.

Query functions are keyword-only, never commit, and return plain values.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    case,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from granular.adapters.db.base import Base, as_utc
from granular.adapters.db.devices import DeviceRevisionRow, DeviceRow
from granular.adapters.db.readings import EnergyIntervalRow
from granular.adapters.db.reservations import ReservationDeviceRow, ReservationRow
from granular.domain.issuance import RevertedItem

Id = BigInteger().with_variant(Integer(), "sqlite")

PENDING = "pending"
ISSUED = "issued"
FAILED = "failed"
LEFTOVER = "leftover"
REVERTED = "reverted"  # its batch reverted on chain: the volume goes back to planning
RETRIED = "retried"  # a reverted item whose volume was planned again
RELEASED = (REVERTED, RETRIED)  # neither accounted for a window nor counted to a target
CONFIRMED = "confirmed"
SPLIT = "split"


class IssuanceBatchRow(Base):
    __tablename__ = "issuance_batches"
    __table_args__ = (
        UniqueConstraint("chain_id", "batch_id"),
        Index("ix_issuance_batches_chain_state", "chain_id", "state"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    batch_id: Mapped[str] = mapped_column(String(66))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(Id, ForeignKey("issuance_batches.id"))
    tier: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    item_count: Mapped[int] = mapped_column(Integer)
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class IssuanceItemRow(Base):
    __tablename__ = "issuance_items"
    __table_args__ = (
        UniqueConstraint(
            "reservation_id", "device_id", "window_start", "sequence", name="uq_issuance_items_key"
        ),
        Index("ix_issuance_items_batch", "batch_row_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    reservation_id: Mapped[int] = mapped_column(ForeignKey("reservations.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sequence: Mapped[int] = mapped_column(Integer)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(16))
    quantity_wh: Mapped[int] = mapped_column(BigInteger)
    owner: Mapped[str] = mapped_column(String(42))
    state: Mapped[str] = mapped_column(String(16))
    data_hash: Mapped[str | None] = mapped_column(String(66))
    batch_row_id: Mapped[int | None] = mapped_column(Id, ForeignKey("issuance_batches.id"))
    batch_position: Mapped[int | None] = mapped_column(Integer)
    failure_code: Mapped[str | None] = mapped_column(String(100))
    failure_detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class IssuedCertificateRow(Base):
    __tablename__ = "issued_certificates"
    __table_args__ = (UniqueConstraint("item_id"),)

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    certificate_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    item_id: Mapped[int] = mapped_column(Id, ForeignKey("issuance_items.id"))
    batch_row_id: Mapped[int] = mapped_column(Id, ForeignKey("issuance_batches.id"))
    tx_hash: Mapped[str] = mapped_column(String(66))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    data_hash: Mapped[str] = mapped_column(String(66))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class IssuanceProvenanceRow(Base):
    __tablename__ = "issuance_provenance"

    item_id: Mapped[int] = mapped_column(Id, ForeignKey("issuance_items.id"), primary_key=True)
    details: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class IssuanceReservationStateRow(Base):
    __tablename__ = "issuance_reservation_state"

    reservation_id: Mapped[int] = mapped_column(ForeignKey("reservations.id"), primary_key=True)
    considered_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    target_reached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# Core tables for bulk inserts: the ORM's bulk path costs more per row than the SQL.
_ITEMS = cast(Table, IssuanceItemRow.__table__)
_PROVENANCE = cast(Table, IssuanceProvenanceRow.__table__)
_CERTIFICATES = cast(Table, IssuedCertificateRow.__table__)
_RELEASED_ITEMS = _ITEMS.alias("released_items")


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntervalRecord:
    id: int
    device_id: int
    start: datetime
    end: datetime
    energy_wh: int
    submission_id: int


@dataclass(frozen=True, slots=True)
class RevisionRecord:
    id: int
    device_id: int
    revision: int
    valid_from: datetime
    capacity_w: int
    external_id: str
    country_code: str
    fuel_code: str
    device_type_code: str
    project_name: str | None
    latitude: str | None
    longitude: str | None
    kind: str
    organization_id: int


@dataclass(frozen=True, slots=True)
class BatchRecord:
    id: int
    chain_id: int
    batch_id: str
    idempotency_key: str
    parent_id: int | None
    tier: str
    state: str
    item_count: int
    tx_hash: str | None
    block_number: int | None
    error_code: str | None
    error_detail: str | None


@dataclass(frozen=True, slots=True)
class ItemRecord:
    id: int
    reservation_id: int
    device_id: int
    window_start: datetime
    sequence: int
    period_start: datetime
    period_end: datetime
    kind: str
    quantity_wh: int
    owner: str
    state: str
    data_hash: str | None
    batch_row_id: int | None
    batch_position: int | None
    failure_code: str | None
    failure_detail: str | None


@dataclass(frozen=True, slots=True)
class NewItem:
    reservation_id: int
    device_id: int
    window_start: datetime
    sequence: int
    period_start: datetime
    period_end: datetime
    kind: str
    quantity_wh: int
    owner: str
    state: str
    data_hash: str | None
    failure_code: str | None
    failure_detail: str | None
    provenance: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    chain_id: int
    certificate_id: int
    tx_hash: str
    block_number: int | None
    data_hash: str
    item: ItemRecord
    batch: BatchRecord
    provenance: dict[str, Any]


_ITEM_FIELDS = tuple(ItemRecord.__dataclass_fields__)


def _batch(row: IssuanceBatchRow) -> BatchRecord:
    return BatchRecord(
        id=row.id,
        chain_id=row.chain_id,
        batch_id=row.batch_id,
        idempotency_key=row.idempotency_key,
        parent_id=row.parent_id,
        tier=row.tier,
        state=row.state,
        item_count=row.item_count,
        tx_hash=row.tx_hash,
        block_number=row.block_number,
        error_code=row.error_code,
        error_detail=row.error_detail,
    )


def _item(row: IssuanceItemRow) -> ItemRecord:
    return ItemRecord(
        id=row.id,
        reservation_id=row.reservation_id,
        device_id=row.device_id,
        window_start=as_utc(row.window_start),
        sequence=row.sequence,
        period_start=as_utc(row.period_start),
        period_end=as_utc(row.period_end),
        kind=row.kind,
        quantity_wh=row.quantity_wh,
        owner=row.owner,
        state=row.state,
        data_hash=row.data_hash,
        batch_row_id=row.batch_row_id,
        batch_position=row.batch_position,
        failure_code=row.failure_code,
        failure_detail=row.failure_detail,
    )


# --- planning reads -----------------------------------------------------------------------


def reservations_to_plan(
    *, session: Session, now: datetime, frequencies: Collection[str] | None
) -> list[int]:
    """Reservations that may have due windows: started, not ended by DELETE before their
    start, not completed by their target (by time they are kept: their last windows fall
    due at end + grace)."""
    query = select(ReservationRow.id).where(
        ReservationRow.start_at < now,
        _not_completed_by_target(ReservationRow.completed_at, ReservationRow.end_at),
    )
    if frequencies is not None:
        query = query.where(ReservationRow.frequency.in_(sorted(frequencies)))
    return list(session.scalars(query.order_by(ReservationRow.id)))


def _not_completed_by_target(completed_at: Any, end_at: Any) -> Any:
    """completed_at is NULL, or was set by time (== end), not by the target."""
    return (completed_at.is_(None)) | (completed_at >= end_at)


def _released(retrying: Collection[int]) -> Any:
    """Items whose volume is planned again: retried ones, and the reverted ones in
    `retrying` (due for their retry). Another reverted item is held like one in flight."""
    released = IssuanceItemRow.state == RETRIED
    if retrying:
        released = released | IssuanceItemRow.id.in_(sorted(retrying))
    return released


def accounted(
    *, session: Session, reservation_id: int, retrying: Collection[int] = ()
) -> dict[tuple[int, datetime], tuple[int, int]]:
    """(device, window start) -> (Wh held by its items, last sequence). Retried items, and
    reverted ones in `retrying`, hold nothing (their volume is planned again) but keep
    their sequence."""
    held = case((_released(retrying), 0), else_=IssuanceItemRow.quantity_wh)
    rows = session.execute(
        select(
            IssuanceItemRow.device_id,
            IssuanceItemRow.window_start,
            func.sum(held),
            func.max(IssuanceItemRow.sequence),
        )
        .where(IssuanceItemRow.reservation_id == reservation_id)
        .group_by(IssuanceItemRow.device_id, IssuanceItemRow.window_start)
    )
    return {(d, as_utc(w)): (int(total), int(seq)) for d, w, total, seq in rows}


def reverted_items(*, session: Session, reservation_id: int) -> list[RevertedItem]:
    """The reservation's reverted items (volume to plan again), each with when it reverted
    and how many items of its (device, window) reverted so far, itself included."""
    reverts = (
        select(func.count())
        .select_from(_RELEASED_ITEMS)
        .where(
            _RELEASED_ITEMS.c.reservation_id == IssuanceItemRow.reservation_id,
            _RELEASED_ITEMS.c.device_id == IssuanceItemRow.device_id,
            _RELEASED_ITEMS.c.window_start == IssuanceItemRow.window_start,
            _RELEASED_ITEMS.c.state.in_(RELEASED),
        )
        .scalar_subquery()
    )
    rows = session.execute(
        select(IssuanceItemRow.id, IssuanceItemRow.updated_at, reverts)
        .where(
            IssuanceItemRow.reservation_id == reservation_id,
            IssuanceItemRow.state == REVERTED,
        )
        .order_by(IssuanceItemRow.id)
    ).tuples()
    return [RevertedItem(i, as_utc(at), int(n)) for i, at, n in rows]


def counted_production_wh(
    *, session: Session, reservation_id: int, retrying: Collection[int] = ()
) -> int:
    """Production Wh minted or in flight for the reservation (what counts toward its
    target): issued, pending, and reverted but not in `retrying` (held until its retry)."""
    total = session.scalar(
        select(func.coalesce(func.sum(IssuanceItemRow.quantity_wh), 0)).where(
            IssuanceItemRow.reservation_id == reservation_id,
            IssuanceItemRow.kind == "production",
            IssuanceItemRow.state.in_((PENDING, ISSUED, REVERTED)),
            ~_released(retrying),
        )
    )
    return int(total or 0)


def intervals_between(
    *, session: Session, device_ids: Collection[int], start: datetime, end: datetime
) -> list[IntervalRecord]:
    """Every interval of the devices overlapping `[start, end)`, by device then start."""
    if not device_ids or start >= end:
        return []
    rows = session.execute(
        select(
            EnergyIntervalRow.id,
            EnergyIntervalRow.device_id,
            EnergyIntervalRow.start_at,
            EnergyIntervalRow.end_at,
            EnergyIntervalRow.energy_wh,
            EnergyIntervalRow.submission_id,
        )
        .where(
            EnergyIntervalRow.device_id.in_(sorted(device_ids)),
            EnergyIntervalRow.start_at < end,
            EnergyIntervalRow.end_at > start,
        )
        .order_by(EnergyIntervalRow.device_id, EnergyIntervalRow.start_at)
    )
    return [IntervalRecord(i, d, as_utc(s), as_utc(e), wh, sub) for i, d, s, e, wh, sub in rows]


def revisions_in_force(
    *, session: Session, device_ids: Collection[int], at: datetime
) -> dict[int, RevisionRecord]:
    """Per device, the revision in force at `at` (the latest written at or before it)."""
    if not device_ids:
        return {}
    rows = session.execute(
        select(DeviceRevisionRow, DeviceRow.organization_id)
        .join(DeviceRow, DeviceRow.id == DeviceRevisionRow.device_id)
        .where(
            DeviceRevisionRow.device_id.in_(sorted(device_ids)),
            DeviceRevisionRow.valid_from <= at,
        )
        .order_by(DeviceRevisionRow.device_id, DeviceRevisionRow.revision)
    ).tuples()
    found: dict[int, RevisionRecord] = {}
    for row, organization_id in rows:
        found[row.device_id] = RevisionRecord(
            id=row.id,
            device_id=row.device_id,
            revision=row.revision,
            valid_from=as_utc(row.valid_from),
            capacity_w=row.capacity_w,
            external_id=row.external_id,
            country_code=row.country_code,
            fuel_code=row.fuel_code,
            device_type_code=row.device_type_code,
            project_name=row.project_name,
            latitude=None if row.latitude is None else str(row.latitude.normalize()),
            longitude=None if row.longitude is None else str(row.longitude.normalize()),
            kind=row.kind,
            organization_id=organization_id,
        )
    return found


def considered_until(*, session: Session, reservation_id: int) -> datetime | None:
    row = session.get(IssuanceReservationStateRow, reservation_id)
    return None if row is None or row.considered_until is None else as_utc(row.considered_until)


def target_reached_at(*, session: Session, reservation_id: int) -> datetime | None:
    row = session.get(IssuanceReservationStateRow, reservation_id)
    return None if row is None or row.target_reached_at is None else as_utc(row.target_reached_at)


def set_reservation_state(
    *,
    session: Session,
    reservation_id: int,
    considered: datetime | None,
    target_reached: datetime | None,
    now: datetime,
) -> None:
    """Move `considered_until` forward (never back); record when the target was reached."""
    row = session.get(IssuanceReservationStateRow, reservation_id)
    if row is None:
        row = IssuanceReservationStateRow(reservation_id=reservation_id, updated_at=now)
        session.add(row)
    if considered is not None and (
        row.considered_until is None or as_utc(row.considered_until) < considered
    ):
        row.considered_until = considered
    if target_reached is not None and row.target_reached_at is None:
        row.target_reached_at = target_reached
    row.updated_at = now
    session.flush()


# --- writes -------------------------------------------------------------------------------


def add_batch(
    *,
    session: Session,
    chain_id: int,
    batch_id: str,
    idempotency_key: str,
    tier: str,
    item_count: int,
    parent_id: int | None,
    now: datetime,
) -> int:
    row = IssuanceBatchRow(
        chain_id=chain_id,
        batch_id=batch_id,
        idempotency_key=idempotency_key,
        parent_id=parent_id,
        tier=tier,
        state=PENDING,
        item_count=item_count,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row.id


def add_items(
    *, session: Session, items: Sequence[NewItem], batch_row_id: int | None, now: datetime
) -> list[int]:
    """Insert items (in a batch at their positions, when one is given) and their
    provenance; the unique key refuses an item planned before (IntegrityError)."""
    if not items:
        return []
    rows = [
        {
            "reservation_id": item.reservation_id,
            "device_id": item.device_id,
            "window_start": item.window_start,
            "sequence": item.sequence,
            "period_start": item.period_start,
            "period_end": item.period_end,
            "kind": item.kind,
            "quantity_wh": item.quantity_wh,
            "owner": item.owner,
            "state": item.state,
            "data_hash": item.data_hash,
            "batch_row_id": batch_row_id,
            "batch_position": position if batch_row_id is not None else None,
            "failure_code": item.failure_code,
            "failure_detail": item.failure_detail,
            "created_at": now,
            "updated_at": now,
        }
        for position, item in enumerate(items)
    ]
    if batch_row_id is None:
        ids = list(
            session.scalars(
                insert(_ITEMS).returning(_ITEMS.c.id, sort_by_parameter_order=True), rows
            )
        )
    else:
        # A plain executemany (one prepared statement) and the ids read back by position:
        # RETURNING makes one large statement per page that the driver parses anew.
        session.execute(insert(_ITEMS), rows)
        found = session.execute(
            select(_ITEMS.c.batch_position, _ITEMS.c.id).where(
                _ITEMS.c.batch_row_id == batch_row_id
            )
        ).tuples()
        by_position = {position: item_id for position, item_id in found}
        ids = [by_position[position] for position in range(len(items))]
    session.execute(
        insert(_PROVENANCE),
        [
            {"item_id": item_id, "details": item.provenance, "created_at": now}
            for item_id, item in zip(ids, items, strict=True)
        ],
    )
    return ids


def pending_batches(*, session: Session, chain_id: int) -> list[BatchRecord]:
    rows = session.scalars(
        select(IssuanceBatchRow)
        .where(IssuanceBatchRow.chain_id == chain_id, IssuanceBatchRow.state == PENDING)
        .order_by(IssuanceBatchRow.id)
    )
    return [_batch(row) for row in rows]


def batch_items(*, session: Session, batch_row_id: int) -> list[ItemRecord]:
    """A batch's items in their calldata order (plain columns: no ORM objects to build)."""
    rows = session.execute(
        select(*(_ITEMS.c[name] for name in _ITEM_FIELDS))
        .where(_ITEMS.c.batch_row_id == batch_row_id)
        .order_by(_ITEMS.c.batch_position)
    ).tuples()
    found = []
    for row in rows:
        values = dict(zip(_ITEM_FIELDS, row, strict=True))
        for name in ("window_start", "period_start", "period_end"):
            values[name] = as_utc(values[name])
        found.append(ItemRecord(**values))
    return found


def close_batch(
    *,
    session: Session,
    batch_row_id: int,
    state: str,
    tx_hash: str | None,
    block_number: int | None,
    error_code: str | None,
    error_detail: str | None,
    now: datetime,
) -> bool:
    """Pending -> `state`; False if another settler closed it first (nothing changed)."""
    result = session.execute(
        update(IssuanceBatchRow)
        .where(IssuanceBatchRow.id == batch_row_id, IssuanceBatchRow.state == PENDING)
        .values(
            state=state,
            tx_hash=tx_hash,
            block_number=block_number,
            error_code=error_code,
            error_detail=error_detail,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def move_items(
    *, session: Session, item_ids: Sequence[int], batch_row_id: int, now: datetime
) -> None:
    """Put items in another batch (a half of a bisected one), at their new positions."""
    for position, item_id in enumerate(item_ids):
        session.execute(
            update(IssuanceItemRow)
            .where(IssuanceItemRow.id == item_id)
            .values(batch_row_id=batch_row_id, batch_position=position, updated_at=now)
            .execution_options(synchronize_session=False)
        )


def fail_items(
    *,
    session: Session,
    item_ids: Sequence[int],
    state: str,
    code: str,
    detail: str,
    now: datetime,
) -> None:
    """Pending items -> `state` (failed: final; reverted: planned again) with the reason."""
    assert state in (FAILED, REVERTED), state
    session.execute(
        update(IssuanceItemRow)
        .where(IssuanceItemRow.id.in_(list(item_ids)), IssuanceItemRow.state == PENDING)
        .values(state=state, failure_code=code[:100], failure_detail=detail, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def mark_retried(*, session: Session, item_ids: Sequence[int], now: datetime) -> None:
    """Reverted items whose volume a plan has taken up again -> retried."""
    if not item_ids:
        return
    session.execute(
        update(IssuanceItemRow)
        .where(IssuanceItemRow.id.in_(list(item_ids)), IssuanceItemRow.state == REVERTED)
        .values(state=RETRIED, updated_at=now)
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True, slots=True)
class Minted:
    item_id: int
    certificate_id: int
    data_hash: str


def record_certificates(
    *,
    session: Session,
    chain_id: int,
    batch_row_id: int,
    tx_hash: str,
    block_number: int | None,
    minted: Sequence[Minted],
    now: datetime,
) -> None:
    session.execute(
        insert(_CERTIFICATES),
        [
            {
                "chain_id": chain_id,
                "certificate_id": m.certificate_id,
                "item_id": m.item_id,
                "batch_row_id": batch_row_id,
                "tx_hash": tx_hash,
                "block_number": block_number,
                "data_hash": m.data_hash,
                "created_at": now,
            }
            for m in minted
        ],
    )
    session.execute(
        update(IssuanceItemRow)
        .where(IssuanceItemRow.batch_row_id == batch_row_id, IssuanceItemRow.state == PENDING)
        .values(state=ISSUED, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def refresh_volumes(*, session: Session, reservation_ids: Iterable[int], now: datetime) -> None:
    """Recompute the reservations' issued, failed and leftover Wh from their items. Failed
    Wh is what failed and is not (yet) planned again: failed and reverted items, never a
    retried one, whose volume is in a later item."""
    for reservation_id in sorted(set(reservation_ids)):
        totals = session.execute(
            select(
                func.coalesce(
                    func.sum(
                        case(
                            (IssuanceItemRow.state == ISSUED, IssuanceItemRow.quantity_wh), else_=0
                        )
                    ),
                    0,
                ),
                func.coalesce(
                    func.sum(
                        case(
                            (
                                IssuanceItemRow.state.in_((FAILED, REVERTED)),
                                IssuanceItemRow.quantity_wh,
                            ),
                            else_=0,
                        )
                    ),
                    0,
                ),
                func.coalesce(
                    func.sum(
                        case(
                            (IssuanceItemRow.state == LEFTOVER, IssuanceItemRow.quantity_wh),
                            else_=0,
                        )
                    ),
                    0,
                ),
            ).where(IssuanceItemRow.reservation_id == reservation_id)
        ).one()
        session.execute(
            update(ReservationRow)
            .where(ReservationRow.id == reservation_id)
            .values(issued_wh=int(totals[0]), failed_wh=int(totals[1]), leftover_wh=int(totals[2]))
            .execution_options(synchronize_session=False)
        )


@dataclass(frozen=True, slots=True)
class TargetProgress:
    reservation_id: int
    target_volume_wh: int
    authority_to_exceed: bool
    settled_wh: int  # production confirmed on chain
    reached_at: datetime | None  # when confirmed production first reached the target


def target_progress(*, session: Session, reservation_ids: Collection[int]) -> list[TargetProgress]:
    """Per reservation, its target terms and the production confirmed on chain.

    The reservation rows are locked first (in id order), in a statement of their own: two
    settlers confirming batches of one reservation at once then count one after the other,
    the second seeing the first's certificates, so neither misses the moment the target is
    reached (PostgreSQL; SQLite has one writer at a time anyway)."""
    if not reservation_ids:
        return []
    session.execute(
        select(ReservationRow.id)
        .where(ReservationRow.id.in_(sorted(reservation_ids)))
        .order_by(ReservationRow.id)
        .with_for_update()
    ).all()
    settled = (
        select(func.coalesce(func.sum(IssuanceItemRow.quantity_wh), 0))
        .where(
            IssuanceItemRow.reservation_id == ReservationRow.id,
            IssuanceItemRow.kind == "production",
            IssuanceItemRow.state == ISSUED,
        )
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            ReservationRow.id,
            ReservationRow.target_volume_wh,
            ReservationRow.authority_to_exceed,
            settled,
            IssuanceReservationStateRow.target_reached_at,
        )
        .outerjoin(
            IssuanceReservationStateRow,
            IssuanceReservationStateRow.reservation_id == ReservationRow.id,
        )
        .where(ReservationRow.id.in_(sorted(reservation_ids)))
        .order_by(ReservationRow.id)
    ).tuples()
    return [
        TargetProgress(r, int(t), bool(a), int(wh), None if at is None else as_utc(at))
        for r, t, a, wh, at in rows
    ]


def complete_reservation(*, session: Session, reservation_id: int, now: datetime) -> None:
    """Production confirmed on chain reached the target without authority to exceed:
    completed at `now`."""
    session.execute(
        update(ReservationRow)
        .where(ReservationRow.id == reservation_id, ReservationRow.completed_at.is_(None))
        .values(completed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def complete_expired_reservations(*, session: Session, now: datetime) -> list[int]:
    """Reservations whose end passed, neither completed nor ended: completed_at = end."""
    expired = list(
        session.execute(
            select(ReservationRow.id, ReservationRow.end_at).where(
                ReservationRow.end_at <= now,
                ReservationRow.completed_at.is_(None),
                ReservationRow.ended_at.is_(None),
            )
        ).tuples()
    )
    for reservation_id, end_at in expired:
        session.execute(
            update(ReservationRow)
            .where(ReservationRow.id == reservation_id)
            .values(completed_at=end_at, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    return [reservation_id for reservation_id, _ in expired]


def closed_reservations_holding_devices(*, session: Session) -> list[tuple[int, datetime]]:
    """Completed or ended reservations that still hold a device, with when they closed."""
    rows = session.execute(
        select(ReservationRow.id, ReservationRow.completed_at, ReservationRow.ended_at)
        .join(ReservationDeviceRow, ReservationDeviceRow.reservation_id == ReservationRow.id)
        .where(
            ReservationDeviceRow.released_at.is_(None),
            ReservationRow.completed_at.is_not(None) | ReservationRow.ended_at.is_not(None),
        )
        .distinct()
    ).tuples()
    return [
        (reservation_id, min(as_utc(m) for m in (completed, ended) if m is not None))
        for reservation_id, completed, ended in rows
    ]


# --- reading certificates -----------------------------------------------------------------


def get_certificate(
    *, session: Session, chain_id: int, certificate_id: int
) -> CertificateRecord | None:
    cert = session.get(IssuedCertificateRow, (chain_id, certificate_id))
    if cert is None:
        return None
    item = session.get(IssuanceItemRow, cert.item_id)
    batch = session.get(IssuanceBatchRow, cert.batch_row_id)
    provenance = session.get(IssuanceProvenanceRow, cert.item_id)
    assert item is not None and batch is not None, "foreign keys hold"
    return CertificateRecord(
        chain_id=cert.chain_id,
        certificate_id=cert.certificate_id,
        tx_hash=cert.tx_hash,
        block_number=cert.block_number,
        data_hash=cert.data_hash,
        item=_item(item),
        batch=_batch(batch),
        provenance=dict(provenance.details) if provenance is not None else {},
    )


def items_of_reservation(*, session: Session, reservation_id: int) -> list[ItemRecord]:
    rows = session.scalars(
        select(IssuanceItemRow)
        .where(IssuanceItemRow.reservation_id == reservation_id)
        .order_by(IssuanceItemRow.window_start, IssuanceItemRow.device_id, IssuanceItemRow.sequence)
    )
    return [_item(row) for row in rows]


def certificate_ids_of_items(*, session: Session, item_ids: Collection[int]) -> dict[int, int]:
    if not item_ids:
        return {}
    rows = session.execute(
        select(IssuedCertificateRow.item_id, IssuedCertificateRow.certificate_id).where(
            IssuedCertificateRow.item_id.in_(sorted(item_ids))
        )
    )
    return {item_id: cert_id for item_id, cert_id in rows}
