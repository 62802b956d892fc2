"""Device groups (one row per organization and deviceGrpId), and the D-REC columns that
devices and device revisions share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from granular.adapters.db.base import Base
from granular.domain.device_groups import DeviceGroupSpec


class DrecColumns:
    """The D-REC fields of a device (domain/devices.py DREC_COLUMNS), one typed column
    each, on `devices` and `device_revisions` alike. `group_external_id` is the
    deviceGrpId of a group of the device's organization (checked by the service)."""

    drec_version: Mapped[str | None] = mapped_column(String(16))
    group_external_id: Mapped[str | None] = mapped_column(String(64))
    drec_org_id: Mapped[str | None] = mapped_column(String(64))
    organisation_name: Mapped[str | None] = mapped_column(String(200))
    onboarded_by: Mapped[str | None] = mapped_column(String(200))
    device_oem: Mapped[str | None] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(500))
    postal_code: Mapped[str | None] = mapped_column(String(32))
    energy_storage: Mapped[bool | None] = mapped_column(Boolean)
    energy_storage_capacity_wh: Mapped[int | None] = mapped_column(BigInteger)
    quality_labels: Mapped[str | None] = mapped_column(String(500))
    # Bit n - 1 set: serves SDG n (domain/drec.py).
    sdg_benefits: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    impact_story: Mapped[str | None] = mapped_column(String(4000))
    images: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")


DREC_SPEC_COLUMNS = (
    "drec_version",
    "group_external_id",
    "drec_org_id",
    "organisation_name",
    "onboarded_by",
    "device_oem",
    "address",
    "postal_code",
    "energy_storage",
    "energy_storage_capacity_wh",
    "quality_labels",
    "sdg_benefits",
    "impact_story",
    "images",
)


class DeviceGroupRow(Base):
    __tablename__ = "device_groups"
    __table_args__ = (UniqueConstraint("organization_id", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    external_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    sdg_benefits: Mapped[int] = mapped_column(Integer)
    impact_story: Mapped[str | None] = mapped_column(String(4000))
    images: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True, slots=True)
class StoredDeviceGroup:
    id: int
    organization_id: int
    spec: DeviceGroupSpec


def _stored(row: DeviceGroupRow) -> StoredDeviceGroup:
    spec = DeviceGroupSpec(
        external_id=row.external_id,
        name=row.name,
        sdg_benefits=row.sdg_benefits,
        impact_story=row.impact_story,
        images=tuple(row.images or ()),
    )
    return StoredDeviceGroup(row.id, row.organization_id, spec)


def _columns(spec: DeviceGroupSpec) -> dict[str, Any]:
    return {**spec.as_columns(), "images": list(spec.images)}


def upsert_device_group(
    *, session: Session, organization_id: int, spec: DeviceGroupSpec, now: datetime
) -> tuple[str, StoredDeviceGroup]:
    """Create or update by (organization, deviceGrpId): "created", "updated" or
    "unchanged"."""
    row = session.scalar(
        select(DeviceGroupRow).where(
            DeviceGroupRow.organization_id == organization_id,
            DeviceGroupRow.external_id == spec.external_id,
        )
    )
    if row is None:
        row = DeviceGroupRow(
            organization_id=organization_id, created_at=now, updated_at=now, **_columns(spec)
        )
        session.add(row)
        session.flush()
        return "created", _stored(row)
    if _stored(row).spec == spec:
        return "unchanged", _stored(row)
    for name, value in _columns(spec).items():
        setattr(row, name, value)
    row.updated_at = now
    session.flush()
    return "updated", _stored(row)


def get_device_group(*, session: Session, group_id: int) -> StoredDeviceGroup | None:
    row = session.get(DeviceGroupRow, group_id)
    return None if row is None else _stored(row)


def find_device_group(
    *, session: Session, organization_id: int, external_id: str
) -> StoredDeviceGroup | None:
    """The group `external_id` (a deviceGrpId) of the organization, if it exists."""
    row = session.scalar(
        select(DeviceGroupRow).where(
            DeviceGroupRow.organization_id == organization_id,
            DeviceGroupRow.external_id == external_id,
        )
    )
    return None if row is None else _stored(row)


def list_device_groups(
    *, session: Session, organization_id: int | None, limit: int, offset: int
) -> list[StoredDeviceGroup]:
    query = select(DeviceGroupRow)
    if organization_id is not None:
        query = query.where(DeviceGroupRow.organization_id == organization_id)
    query = query.order_by(DeviceGroupRow.id).limit(limit).offset(offset)
    return [_stored(row) for row in session.scalars(query)]
