"""Organizations and their API keys (stored as sha256 hashes, never in the clear)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from granular.adapters.db.base import Base


class OrganizationRow(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's organization and role."""

    api_key_id: int
    organization_id: int
    organization: str
    role: str


def get_or_create_organization(*, session: Session, name: str, now: datetime) -> int:
    found = session.scalar(select(OrganizationRow.id).where(OrganizationRow.name == name))
    if found is not None:
        return found
    row = OrganizationRow(name=name, created_at=now)
    session.add(row)
    session.flush()
    return row.id


def add_api_key(
    *,
    session: Session,
    organization_id: int,
    role: str,
    key_hash: str,
    prefix: str,
    label: str | None,
    now: datetime,
) -> int:
    row = ApiKeyRow(
        organization_id=organization_id,
        role=role,
        key_hash=key_hash,
        prefix=prefix,
        label=label,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row.id


def principal_for_key_hash(*, session: Session, key_hash: str) -> Principal | None:
    row = session.execute(
        select(ApiKeyRow.id, ApiKeyRow.organization_id, OrganizationRow.name, ApiKeyRow.role)
        .join(OrganizationRow, OrganizationRow.id == ApiKeyRow.organization_id)
        .where(ApiKeyRow.key_hash == key_hash, ApiKeyRow.revoked_at.is_(None))
    ).first()
    return None if row is None else Principal(row[0], row[1], row[2], row[3])


def revoke_api_key(*, session: Session, prefix: str, now: datetime) -> int:
    rows = session.scalars(
        select(ApiKeyRow).where(ApiKeyRow.prefix == prefix, ApiKeyRow.revoked_at.is_(None))
    ).all()
    for row in rows:
        row.revoked_at = now
    return len(rows)
