"""Reservations and the devices they hold.

`reservations`: one row per buyer's order. `issued_wh`, `failed_wh` and `leftover_wh` are
written by the issuance service (not built yet); until then they stay 0.

`reservation_devices`: one row per stint of a device in a reservation, `[added_at,
released_at)`. A device removed by PATCH gets `released_at`; a DELETE releases every held
device at `ended_at`. Re-adding a device opens a new row, so every booking of a device can
be rebuilt from these rows.

Concurrency: a service that books devices calls `lock_devices` (or `lock_reservation`) as
the first statement of its transaction. On PostgreSQL that takes row locks
(`SELECT ... FOR NO KEY UPDATE` on the device rows, in id order so two bookers never
deadlock; `FOR UPDATE` on the reservation row); a second transaction for the same device
waits, then reads the first one's bookings. SQLite has no row locks: the same calls start
the write transaction at once (pysqlite otherwise delays BEGIN until the first INSERT, so
both racers would read before either writes), which serialises bookers on the database
lock.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    DateTime,
    ForeignKey,
    Index,
    Row,
    Select,
    String,
    false,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from granular.adapters.db.base import Base, as_utc
from granular.adapters.db.devices import DeviceRow
from granular.domain.devices import DeviceKind


class ReservationRow(Base):
    __tablename__ = "reservations"

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    created_by_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    frequency: Mapped[str] = mapped_column(String(16))
    start_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    target_volume_wh: Mapped[int] = mapped_column(BigInteger)
    authority_to_exceed: Mapped[bool] = mapped_column(Boolean)
    wallet: Mapped[str] = mapped_column(String(42))
    gas_tier: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Written by the issuance service once it exists; 0 until then.
    issued_wh: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    failed_wh: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    leftover_wh: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ReservationDeviceRow(Base):
    """One stint of a device in a reservation; `released_at` is NULL while it is held."""

    __tablename__ = "reservation_devices"
    __table_args__ = (Index("ix_reservation_devices_device_released", "device_id", "released_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    reservation_id: Mapped[int] = mapped_column(ForeignKey("reservations.id"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stint:
    """One stint of a device; `kind` is the device's (production or consumption): it tells
    issuance which kind of certificate the device's windows become."""

    device_id: int
    added_at: datetime
    released_at: datetime | None
    kind: DeviceKind = DeviceKind.PRODUCTION


@dataclass(frozen=True, slots=True)
class StoredReservation:
    id: int
    organization_id: int
    frequency: str
    start: datetime
    end: datetime
    target_volume_wh: int
    authority_to_exceed: bool
    wallet: str
    gas_tier: str
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    completed_at: datetime | None
    issued_wh: int
    failed_wh: int
    leftover_wh: int
    stints: tuple[Stint, ...]

    @property
    def held_device_ids(self) -> frozenset[int]:
        """Every device held now, of either kind (exclusivity is over all of them)."""
        return frozenset(s.device_id for s in self.stints if s.released_at is None)

    def held_ids_of(self, kind: DeviceKind) -> frozenset[int]:
        """The devices of `kind` held now."""
        return frozenset(
            s.device_id for s in self.stints if s.released_at is None and s.kind is kind
        )


@dataclass(frozen=True, slots=True)
class BookingRecord:
    """A device's stint in a reservation, with what decides when that stint ends."""

    device_id: int
    reservation_id: int
    start: datetime
    end: datetime
    released_at: datetime | None
    ended_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewReservationRow:
    organization_id: int
    created_by_key_id: int | None
    frequency: str
    start: datetime
    end: datetime
    target_volume_wh: int
    authority_to_exceed: bool
    wallet: str
    gas_tier: str


def _utc_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else as_utc(moment)


# --- locks --------------------------------------------------------------------------------


def _start_write_on_sqlite(session: Session) -> None:
    """On SQLite, begin the write transaction now (a write statement that touches no row)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            update(ReservationRow)
            .where(false())
            .values(id=ReservationRow.id)
            .execution_options(synchronize_session=False)
        )


@dataclass(frozen=True, slots=True)
class LockedDevice:
    """What booking needs to know of a locked device: whose it is and its kind."""

    organization_id: int
    kind: DeviceKind


def lock_devices(*, session: Session, device_ids: Collection[int]) -> dict[int, LockedDevice]:
    """Lock the devices against concurrent booking until the transaction ends; return the
    ones that exist, by id. Call it before reading any booking of these devices."""
    _start_write_on_sqlite(session)
    if not device_ids:
        return {}
    found = session.execute(
        select(DeviceRow.id, DeviceRow.organization_id, DeviceRow.kind)
        .where(DeviceRow.id.in_(sorted(device_ids)))
        .order_by(DeviceRow.id)
        .with_for_update(key_share=True)
    )
    return {
        device_id: LockedDevice(organization_id, DeviceKind(kind))
        for device_id, organization_id, kind in found
    }


def lock_reservation(*, session: Session, reservation_id: int) -> StoredReservation | None:
    """The reservation, locked against concurrent changes until the transaction ends."""
    _start_write_on_sqlite(session)
    row = session.scalar(
        select(ReservationRow)
        .where(ReservationRow.id == reservation_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return None if row is None else _stored(session, [row])[0]


# --- reads --------------------------------------------------------------------------------


def _stored(session: Session, rows: list[ReservationRow]) -> list[StoredReservation]:
    stints: dict[int, list[Stint]] = {row.id: [] for row in rows}
    if rows:
        found = session.execute(
            select(
                ReservationDeviceRow.reservation_id,
                ReservationDeviceRow.device_id,
                ReservationDeviceRow.added_at,
                ReservationDeviceRow.released_at,
                DeviceRow.kind,
            )
            .join(DeviceRow, DeviceRow.id == ReservationDeviceRow.device_id)
            .where(ReservationDeviceRow.reservation_id.in_(list(stints)))
            .order_by(ReservationDeviceRow.id)
        )
        for reservation_id, device_id, added_at, released_at, kind in found:
            stints[reservation_id].append(
                Stint(device_id, as_utc(added_at), _utc_or_none(released_at), DeviceKind(kind))
            )
    return [
        StoredReservation(
            id=row.id,
            organization_id=row.organization_id,
            frequency=row.frequency,
            start=as_utc(row.start_at),
            end=as_utc(row.end_at),
            target_volume_wh=row.target_volume_wh,
            authority_to_exceed=row.authority_to_exceed,
            wallet=row.wallet,
            gas_tier=row.gas_tier,
            created_at=as_utc(row.created_at),
            updated_at=as_utc(row.updated_at),
            ended_at=_utc_or_none(row.ended_at),
            completed_at=_utc_or_none(row.completed_at),
            issued_wh=row.issued_wh,
            failed_wh=row.failed_wh,
            leftover_wh=row.leftover_wh,
            stints=tuple(stints[row.id]),
        )
        for row in rows
    ]


def get_reservation(*, session: Session, reservation_id: int) -> StoredReservation | None:
    row = session.scalar(
        select(ReservationRow)
        .where(ReservationRow.id == reservation_id)
        .execution_options(populate_existing=True)
    )
    return None if row is None else _stored(session, [row])[0]


def list_reservations(
    *, session: Session, organization_id: int | None, limit: int, offset: int
) -> list[StoredReservation]:
    """Reservations oldest first; only `organization_id`'s when one is given."""
    query = select(ReservationRow)
    if organization_id is not None:
        query = query.where(ReservationRow.organization_id == organization_id)
    query = query.order_by(ReservationRow.id).limit(limit).offset(offset)
    rows = list(session.scalars(query.execution_options(populate_existing=True)))
    return _stored(session, rows)


_BookingColumns = tuple[
    int, int, datetime, datetime, datetime | None, datetime | None, datetime | None
]


def _booking_query() -> Select[_BookingColumns]:
    return select(
        ReservationDeviceRow.device_id,
        ReservationRow.id,
        ReservationRow.start_at,
        ReservationRow.end_at,
        ReservationDeviceRow.released_at,
        ReservationRow.ended_at,
        ReservationRow.completed_at,
    ).join(ReservationRow, ReservationRow.id == ReservationDeviceRow.reservation_id)


def _records(rows: Iterable[Row[_BookingColumns]]) -> list[BookingRecord]:
    return [
        BookingRecord(
            device_id=device_id,
            reservation_id=reservation_id,
            start=as_utc(start),
            end=as_utc(end),
            released_at=_utc_or_none(released),
            ended_at=_utc_or_none(ended),
            completed_at=_utc_or_none(completed),
        )
        for device_id, reservation_id, start, end, released, ended, completed in rows
    ]


def booking_records(*, session: Session, device_ids: Collection[int]) -> list[BookingRecord]:
    """Every stint, live or released, of the devices in any reservation."""
    if not device_ids:
        return []
    query = _booking_query().where(ReservationDeviceRow.device_id.in_(sorted(device_ids)))
    return _records(session.execute(query.order_by(ReservationDeviceRow.id)))


def reservable_clause(*, reservable: bool, cutoff: datetime) -> ColumnElement[bool]:
    """A condition on `DeviceRow`, true for the devices that can (`reservable`) or cannot
    be reserved, `cutoff` being `now` minus the 12 h cool-down.

    A stint blocks its device until 12 h after it ended, at the earliest of its release,
    its reservation's `ended_at`, `completed_at` and `end`
    (`domain.reservations.blocks_device`); so it still blocks at `now` while each of
    those that is set lies after `cutoff`. A correlated EXISTS (on the stints' index by
    device): the database finds the busy devices itself, however many there are, instead
    of receiving them as bound parameters."""
    blocking = (
        select(ReservationDeviceRow.id)
        .join(ReservationRow, ReservationRow.id == ReservationDeviceRow.reservation_id)
        .where(
            ReservationDeviceRow.device_id == DeviceRow.id,
            ReservationRow.end_at > cutoff,
            or_(
                ReservationDeviceRow.released_at.is_(None),
                ReservationDeviceRow.released_at > cutoff,
            ),
            or_(ReservationRow.ended_at.is_(None), ReservationRow.ended_at > cutoff),
            or_(ReservationRow.completed_at.is_(None), ReservationRow.completed_at > cutoff),
        )
        .correlate(DeviceRow)
        .exists()
    )
    return ~blocking if reservable else blocking


# --- writes -------------------------------------------------------------------------------


def add_reservation(*, session: Session, new: NewReservationRow, now: datetime) -> int:
    row = ReservationRow(
        organization_id=new.organization_id,
        created_by_key_id=new.created_by_key_id,
        frequency=new.frequency,
        start_at=new.start,
        end_at=new.end,
        target_volume_wh=new.target_volume_wh,
        authority_to_exceed=new.authority_to_exceed,
        wallet=new.wallet,
        gas_tier=new.gas_tier,
        created_at=now,
        updated_at=now,
        issued_wh=0,
        failed_wh=0,
        leftover_wh=0,
    )
    session.add(row)
    session.flush()
    return row.id


def add_devices(
    *, session: Session, reservation_id: int, device_ids: Iterable[int], now: datetime
) -> None:
    session.add_all(
        ReservationDeviceRow(reservation_id=reservation_id, device_id=device_id, added_at=now)
        for device_id in sorted(device_ids)
    )
    session.flush()


def release_devices(
    *,
    session: Session,
    reservation_id: int,
    device_ids: Collection[int] | None,
    now: datetime,
) -> None:
    """Close the held stints of `device_ids` (all held devices when None) at `now`."""
    query = update(ReservationDeviceRow).where(
        ReservationDeviceRow.reservation_id == reservation_id,
        ReservationDeviceRow.released_at.is_(None),
    )
    if device_ids is not None:
        query = query.where(ReservationDeviceRow.device_id.in_(sorted(device_ids)))
    session.execute(query.values(released_at=now).execution_options(synchronize_session=False))


def update_terms(
    *,
    session: Session,
    reservation_id: int,
    end: datetime,
    target_volume_wh: int,
    authority_to_exceed: bool,
    now: datetime,
) -> None:
    session.execute(
        update(ReservationRow)
        .where(ReservationRow.id == reservation_id)
        .values(
            end_at=end,
            target_volume_wh=target_volume_wh,
            authority_to_exceed=authority_to_exceed,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


def end_reservation(*, session: Session, reservation_id: int, now: datetime) -> None:
    """Record `ended_at` and release every held device at `now`."""
    session.execute(
        update(ReservationRow)
        .where(ReservationRow.id == reservation_id)
        .values(ended_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    release_devices(session=session, reservation_id=reservation_id, device_ids=None, now=now)
