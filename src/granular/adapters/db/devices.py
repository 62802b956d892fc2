"""Devices: one row per (organization, externalId), and the revisions of each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from granular.adapters.db.base import Base, as_utc
from granular.adapters.db.device_groups import DREC_SPEC_COLUMNS, DrecColumns
from granular.domain.devices import DeviceKind, DeviceSpec


class DeviceRow(DrecColumns, Base):
    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("organization_id", "external_id"),
        Index(
            "ix_devices_organization_id_group_external_id", "organization_id", "group_external_id"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(64))
    project_name: Mapped[str | None] = mapped_column(String(200))
    country_code: Mapped[str] = mapped_column(String(3), index=True)
    fuel_code: Mapped[str] = mapped_column(String(16), index=True)
    device_type_code: Mapped[str] = mapped_column(String(16))
    capacity_w: Mapped[int] = mapped_column(BigInteger)
    commissioning_date: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    grid_interconnection: Mapped[bool] = mapped_column(Boolean)
    off_taker: Mapped[str] = mapped_column(String(40))
    yield_kwh_per_kw_year: Mapped[Decimal] = mapped_column(Numeric(12, 4))
    latitude: Mapped[Decimal | None] = mapped_column(Numeric(9, 6))
    longitude: Mapped[Decimal | None] = mapped_column(Numeric(9, 6))
    description: Mapped[str | None] = mapped_column(String(2000))
    # DeviceKind: "production" (a plant) or "consumption" (a site meter).
    kind: Mapped[str] = mapped_column(String(16), default="production", server_default="production")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeviceRevisionRow(DrecColumns, Base):
    """One version of a device's spec, as written by a create or a real update.

    Revision n of a device holds the spec in force from `valid_from` until revision n + 1's
    `valid_from` (or now); `api_key_id` is the key that wrote it (None when unknown, as for
    the revisions migration 0006 gave devices that existed before it). Rows are only ever
    inserted, in the transaction that writes the device, so the latest revision is always
    the device row's spec.

    The spec is held in typed columns, one per `DeviceSpec` field with the `devices` type,
    rather than as a JSON snapshot: a revision reads back through the same `_spec` as the
    device (same Numeric precision, same UTC handling), so "revision n equals the device"
    is an exact comparison; an auditor can query and join on `capacity_w` or
    `commissioning_date` in plain SQL on SQLite and PostgreSQL alike; and a new device field
    cannot be left out of the trail silently, since `_add_revision` copies `_SPEC_COLUMNS` and
    fails until the column exists here too (the migration adding it to `devices` adds it
    here)."""

    __tablename__ = "device_revisions"
    # The unique key also serves lookups by device (its leading column): no separate index.
    __table_args__ = (UniqueConstraint("device_id", "revision"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    revision: Mapped[int] = mapped_column(Integer)
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    external_id: Mapped[str] = mapped_column(String(64))
    project_name: Mapped[str | None] = mapped_column(String(200))
    country_code: Mapped[str] = mapped_column(String(3))
    fuel_code: Mapped[str] = mapped_column(String(16))
    device_type_code: Mapped[str] = mapped_column(String(16))
    capacity_w: Mapped[int] = mapped_column(BigInteger)
    commissioning_date: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    grid_interconnection: Mapped[bool] = mapped_column(Boolean)
    off_taker: Mapped[str] = mapped_column(String(40))
    yield_kwh_per_kw_year: Mapped[Decimal] = mapped_column(Numeric(12, 4))
    latitude: Mapped[Decimal | None] = mapped_column(Numeric(9, 6))
    longitude: Mapped[Decimal | None] = mapped_column(Numeric(9, 6))
    description: Mapped[str | None] = mapped_column(String(2000))
    kind: Mapped[str] = mapped_column(String(16), default="production", server_default="production")


@dataclass(frozen=True, slots=True)
class StoredDevice:
    id: int
    organization_id: int
    spec: DeviceSpec


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    organization_id: int | None = None
    country_code: str | None = None
    fuel_code: str | None = None
    off_taker: str | None = None
    device_type_code: str | None = None
    capacity_min_w: int | None = None
    capacity_max_w: int | None = None
    group_external_id: str | None = None  # the deviceGrpId of the devices' group
    kind: DeviceKind | None = None
    # A condition on DeviceRow keeping the devices that can (or cannot) be reserved: an
    # EXISTS / NOT EXISTS built by `adapters.db.reservations.reservable_clause`.
    reservable_clause: ColumnElement[bool] | None = None


_SPEC_COLUMNS = (
    "external_id",
    "country_code",
    "fuel_code",
    "device_type_code",
    "capacity_w",
    "commissioning_date",
    "grid_interconnection",
    "off_taker",
    "project_name",
    "yield_kwh_per_kw_year",
    "latitude",
    "longitude",
    "description",
    *DREC_SPEC_COLUMNS,
    "kind",
)


def _spec(row: DeviceRow | DeviceRevisionRow) -> DeviceSpec:
    values: dict[str, Any] = {name: getattr(row, name) for name in _SPEC_COLUMNS}
    # SQLite returns naive datetimes (every stored one is UTC); PostgreSQL returns the
    # session's time zone, which need not be UTC.
    moment = values["commissioning_date"]
    values["commissioning_date"] = as_utc(moment)
    values["images"] = tuple(values["images"] or ())
    values["kind"] = DeviceKind(values["kind"])
    for name in ("yield_kwh_per_kw_year", "latitude", "longitude"):
        if values[name] is not None:
            values[name] = _canonical(Decimal(values[name]))
    return DeviceSpec(**values)


def _canonical(number: Decimal) -> Decimal:
    """Trailing zeros dropped, never an exponent: 1500.0000 → 1500, 36.800000 → 36.8."""
    normal = number.normalize()
    return normal.quantize(Decimal(1)) if normal == normal.to_integral_value() else normal


def _stored(row: DeviceRow) -> StoredDevice:
    return StoredDevice(row.id, row.organization_id, _spec(row))


def _normalised(spec: DeviceSpec) -> DeviceSpec:
    """The spec as it reads back from storage, so that equality means 'nothing changed'."""
    values = spec.as_columns()
    for name in ("yield_kwh_per_kw_year", "latitude", "longitude"):
        if values[name] is not None:
            values[name] = _canonical(Decimal(values[name]))
    return DeviceSpec(**values)


def upsert_device(
    *,
    session: Session,
    organization_id: int,
    spec: DeviceSpec,
    now: datetime,
    api_key_id: int | None = None,
) -> tuple[str, StoredDevice]:
    """Create or update by (organization, externalId): "created", "updated" or "unchanged".
    A create writes revision 1, an update the next revision (both by `api_key_id`, at
    `now`); "unchanged" writes nothing."""
    row = session.scalar(
        select(DeviceRow).where(
            DeviceRow.organization_id == organization_id,
            DeviceRow.external_id == spec.external_id,
        )
    )
    if row is None:
        row = DeviceRow(organization_id=organization_id, created_at=now, updated_at=now)
        for name, value in _columns(spec).items():
            setattr(row, name, value)
        session.add(row)
        session.flush()
        _add_revision(session, row, now, api_key_id)
        return "created", _stored(row)
    if _spec(row) == _normalised(spec):
        return "unchanged", _stored(row)
    for name, value in _columns(spec).items():
        setattr(row, name, value)
    row.updated_at = now
    # The UPDATE goes first: on PostgreSQL it holds the device's row lock from here on, so
    # a concurrent update of the same device waits, and the next number read below already
    # counts any revision committed before (READ COMMITTED reads per statement).
    session.flush()
    _add_revision(session, row, now, api_key_id)
    return "updated", _stored(row)


def _columns(spec: DeviceSpec) -> dict[str, Any]:
    """The spec as column values (the images tuple as the JSON list it is stored as)."""
    return {**spec.as_columns(), "images": list(spec.images)}


def group_device_ids(
    *, session: Session, organization_id: int, group_external_id: str
) -> list[int]:
    """Ids of the organization's devices that name the group `group_external_id`."""
    query = select(DeviceRow.id).where(
        DeviceRow.organization_id == organization_id,
        DeviceRow.group_external_id == group_external_id,
    )
    return list(session.scalars(query.order_by(DeviceRow.id)))


def _add_revision(session: Session, row: DeviceRow, now: datetime, api_key_id: int | None) -> None:
    """The device's next revision: its spec as now written. Two writers that still reach the
    same number (SQLite has no row lock) break the unique key: an IntegrityError, which
    rolls the whole upload back."""
    latest = session.scalar(
        select(func.max(DeviceRevisionRow.revision)).where(DeviceRevisionRow.device_id == row.id)
    )
    revision = DeviceRevisionRow(
        device_id=row.id,
        revision=(latest or 0) + 1,
        valid_from=now,
        api_key_id=api_key_id,
        **{name: getattr(row, name) for name in _SPEC_COLUMNS},
    )
    session.add(revision)
    session.flush()


def get_device(
    *, session: Session, organization_id: int | None, external_id: str
) -> StoredDevice | None:
    """A device by externalId, within an organization when one is given."""
    query = select(DeviceRow).where(DeviceRow.external_id == external_id)
    if organization_id is not None:
        query = query.where(DeviceRow.organization_id == organization_id)
    rows = session.scalars(query.limit(2)).all()
    return _stored(rows[0]) if len(rows) == 1 else None


def devices_with_external_id(
    *, session: Session, organization_id: int | None, external_id: str, limit: int = 2
) -> list[StoredDevice]:
    """Devices with `external_id`, in one organization or in any (it is unique per
    organization only); at most `limit`, enough to tell one from several."""
    query = select(DeviceRow).where(DeviceRow.external_id == external_id)
    if organization_id is not None:
        query = query.where(DeviceRow.organization_id == organization_id)
    return [_stored(row) for row in session.scalars(query.order_by(DeviceRow.id).limit(limit))]


def get_devices_by_id(*, session: Session, device_ids: list[int]) -> list[StoredDevice]:
    rows = session.scalars(select(DeviceRow).where(DeviceRow.id.in_(device_ids))).all()
    return [_stored(row) for row in rows]


@dataclass(frozen=True, slots=True)
class DeviceRevision:
    """Revision `revision` of a device: `device.spec` was in force from `valid_from` until
    the next revision's `valid_from`. `id` is what a meter-read submission points at."""

    id: int
    revision: int
    valid_from: datetime
    api_key_id: int | None
    device: StoredDevice


def _revision(row: DeviceRevisionRow, organization_id: int) -> DeviceRevision:
    valid_from = as_utc(row.valid_from)
    device = StoredDevice(row.device_id, organization_id, _spec(row))
    return DeviceRevision(row.id, row.revision, valid_from, row.api_key_id, device)


def list_device_revisions(*, session: Session, device: StoredDevice) -> list[DeviceRevision]:
    """Every revision of `device`, oldest first."""
    rows = session.scalars(
        select(DeviceRevisionRow)
        .where(DeviceRevisionRow.device_id == device.id)
        .order_by(DeviceRevisionRow.revision)
    )
    return [_revision(row, device.organization_id) for row in rows]


def latest_device_revision(*, session: Session, device: StoredDevice) -> DeviceRevision | None:
    """The revision in force: the device's spec as last written (None only for a device
    no revision was ever written for, which `upsert_device` never leaves)."""
    row = session.scalar(
        select(DeviceRevisionRow)
        .where(DeviceRevisionRow.device_id == device.id)
        .order_by(DeviceRevisionRow.revision.desc())
        .limit(1)
    )
    return None if row is None else _revision(row, device.organization_id)


def list_devices(
    *, session: Session, where: DeviceFilter, limit: int, offset: int
) -> list[StoredDevice]:
    query = select(DeviceRow)
    for column, value in (
        (DeviceRow.organization_id, where.organization_id),
        (DeviceRow.country_code, where.country_code),
        (DeviceRow.fuel_code, where.fuel_code),
        (DeviceRow.off_taker, where.off_taker),
        (DeviceRow.device_type_code, where.device_type_code),
        (DeviceRow.group_external_id, where.group_external_id),
        (DeviceRow.kind, None if where.kind is None else where.kind.value),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.capacity_min_w is not None:
        query = query.where(DeviceRow.capacity_w >= where.capacity_min_w)
    if where.capacity_max_w is not None:
        query = query.where(DeviceRow.capacity_w <= where.capacity_max_w)
    if where.reservable_clause is not None:
        query = query.where(where.reservable_clause)
    query = query.order_by(DeviceRow.id).limit(limit).offset(offset)
    return [_stored(row) for row in session.scalars(query)]
