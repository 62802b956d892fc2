"""Matching claims' tables and queries.

- `matching_claims`: one row per (reservation, window, sequence): the entries one pass sent
  for that window in a claimBatch (its outbox key), the Wh they claim, and the window's
  production, consumption and total matched Wh as of that pass. Unique on
  (reservation, window, sequence): a pass repeated after a crash collides instead of
  claiming twice.
- `matching_status`: per reservation, what the last pass saw (e.g. waiting for the buyer's
  operator approval), for GET /reservations/{id}.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from granular.adapters.db.base import Base, as_utc
from granular.adapters.db.issuance import (
    ISSUED,
    IssuanceItemRow,
    IssuedCertificateRow,
)
from granular.adapters.db.mirror import (
    MirrorCertificateRow,
    MirrorClaimRow,
    MirrorCursorRow,
    MirrorSliceRow,
)
from granular.adapters.db.outbox import Id
from granular.adapters.db.reservations import ReservationRow

SENT = "sent"
CONFIRMED = "confirmed"
FAILED = "failed"
ACTIVE_STATE = 1  # SliceState.ACTIVE


class MatchingClaimRow(Base):
    __tablename__ = "matching_claims"
    __table_args__ = (
        UniqueConstraint(
            "reservation_id", "window_start", "sequence", name="uq_matching_claims_key"
        ),
        Index("ix_matching_claims_reservation", "reservation_id"),
        Index("ix_matching_claims_request", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    reservation_id: Mapped[int] = mapped_column(ForeignKey("reservations.id"))
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sequence: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    entries: Mapped[Any] = mapped_column(JSON)  # [[productionSliceId, consumptionSliceId, Wh]]
    claimed_wh: Mapped[int] = mapped_column(BigInteger)
    production_wh: Mapped[int] = mapped_column(BigInteger)
    consumption_wh: Mapped[int] = mapped_column(BigInteger)
    matched_wh: Mapped[int] = mapped_column(BigInteger)  # the window's total with this one
    state: Mapped[str] = mapped_column(String(16))
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MatchingStatusRow(Base):
    __tablename__ = "matching_status"

    reservation_id: Mapped[int] = mapped_column(ForeignKey("reservations.id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowItem:
    """A certificate-to-be of a reservation window (an issuance item)."""

    item_id: int
    window_start: datetime
    kind: str
    quantity_wh: int
    state: str
    certificate_id: int | None


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    id: int
    reservation_id: int
    window_start: datetime
    sequence: int
    idempotency_key: str
    claimed_wh: int
    production_wh: int
    consumption_wh: int
    matched_wh: int
    state: str
    block_number: int | None


@dataclass(frozen=True, slots=True)
class NewClaim:
    reservation_id: int
    window_start: datetime
    sequence: int
    entries: list[list[int]]
    claimed_wh: int
    production_wh: int
    consumption_wh: int
    matched_wh: int


# --- queries ------------------------------------------------------------------------------


def reservations_with_consumption(*, session: Session) -> list[tuple[int, str]]:
    """(reservation id, wallet) of reservations with consumption certificates issued."""
    rows = session.execute(
        select(ReservationRow.id, ReservationRow.wallet)
        .where(
            ReservationRow.id.in_(
                select(IssuanceItemRow.reservation_id).where(
                    IssuanceItemRow.kind == "consumption", IssuanceItemRow.state == ISSUED
                )
            )
        )
        .order_by(ReservationRow.id)
    )
    return [(int(r), str(w)) for r, w in rows]


def window_items(*, session: Session, reservation_id: int, chain_id: int) -> list[WindowItem]:
    rows = session.execute(
        select(
            IssuanceItemRow.id,
            IssuanceItemRow.window_start,
            IssuanceItemRow.kind,
            IssuanceItemRow.quantity_wh,
            IssuanceItemRow.state,
            IssuedCertificateRow.certificate_id,
        )
        .outerjoin(
            IssuedCertificateRow,
            (IssuedCertificateRow.item_id == IssuanceItemRow.id)
            & (IssuedCertificateRow.chain_id == chain_id),
        )
        .where(IssuanceItemRow.reservation_id == reservation_id)
        .order_by(IssuanceItemRow.window_start, IssuanceItemRow.id)
    )
    return [
        WindowItem(int(i), as_utc(w), str(k), int(q), str(s), None if c is None else int(c))
        for i, w, k, q, s, c in rows
    ]


def mirrored_certificates(*, session: Session, certificate_ids: Collection[int]) -> set[int]:
    found: set[int] = set()
    ids = sorted(certificate_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found.update(
            session.scalars(
                select(MirrorCertificateRow.id).where(MirrorCertificateRow.id.in_(chunk))
            )
        )
    return found


def active_slices(
    *, session: Session, owner: str, certificate_ids: Collection[int]
) -> list[tuple[int, int, int, int]]:
    """(slice id, certificate id, kind, quantity Wh) of the Active slices `owner` holds."""
    out: list[tuple[int, int, int, int]] = []
    ids = sorted(certificate_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = session.execute(
            select(
                MirrorSliceRow.id,
                MirrorSliceRow.certificate_id,
                MirrorSliceRow.kind,
                MirrorSliceRow.quantity_wh,
            ).where(
                MirrorSliceRow.certificate_id.in_(chunk),
                MirrorSliceRow.owner == owner,
                MirrorSliceRow.state == ACTIVE_STATE,
            )
        )
        out.extend((int(a), int(b), int(c), int(d)) for a, b, c, d in rows)
    return out


def mirror_block(*, session: Session, chain_id: int) -> int | None:
    number = session.scalar(
        select(func.max(MirrorCursorRow.block_number)).where(MirrorCursorRow.chain_id == chain_id)
    )
    return None if number is None else int(number)


def claims_of(*, session: Session, reservation_id: int) -> list[ClaimRecord]:
    t = MatchingClaimRow
    rows = session.execute(
        select(
            t.id,
            t.reservation_id,
            t.window_start,
            t.sequence,
            t.idempotency_key,
            t.claimed_wh,
            t.production_wh,
            t.consumption_wh,
            t.matched_wh,
            t.state,
            t.block_number,
        )
        .where(t.reservation_id == reservation_id)
        .order_by(t.window_start, t.sequence)
    )
    return [
        ClaimRecord(
            id=r[0],
            reservation_id=r[1],
            window_start=as_utc(r[2]),
            sequence=r[3],
            idempotency_key=r[4],
            claimed_wh=r[5],
            production_wh=r[6],
            consumption_wh=r[7],
            matched_wh=r[8],
            state=r[9],
            block_number=r[10],
        )
        for r in rows
    ]


def sent_keys(*, session: Session, chain_id: int) -> list[str]:
    """The outbox keys of claim batches sent and not yet settled."""
    return list(
        session.scalars(
            select(MatchingClaimRow.idempotency_key)
            .where(MatchingClaimRow.chain_id == chain_id, MatchingClaimRow.state == SENT)
            .distinct()
        )
    )


@dataclass(frozen=True, slots=True)
class WindowTotal:
    window_start: datetime
    production_wh: int  # issued
    consumption_wh: int  # issued
    claimed_wh: int  # by confirmed matching claims


def window_totals(
    *,
    session: Session,
    reservation_id: int,
    period_from: datetime | None = None,
    period_to: datetime | None = None,
) -> list[WindowTotal]:
    """Per window of the reservation (in [period_from, period_to) when given)."""
    issued = (
        select(
            IssuanceItemRow.window_start,
            IssuanceItemRow.kind,
            func.sum(IssuanceItemRow.quantity_wh),
        )
        .where(IssuanceItemRow.reservation_id == reservation_id, IssuanceItemRow.state == ISSUED)
        .group_by(IssuanceItemRow.window_start, IssuanceItemRow.kind)
    )
    claimed = (
        select(MatchingClaimRow.window_start, func.sum(MatchingClaimRow.claimed_wh))
        .where(
            MatchingClaimRow.reservation_id == reservation_id,
            MatchingClaimRow.state == CONFIRMED,
        )
        .group_by(MatchingClaimRow.window_start)
    )
    if period_from is not None:
        issued = issued.where(IssuanceItemRow.window_start >= period_from)
        claimed = claimed.where(MatchingClaimRow.window_start >= period_from)
    if period_to is not None:
        issued = issued.where(IssuanceItemRow.window_start < period_to)
        claimed = claimed.where(MatchingClaimRow.window_start < period_to)
    totals: dict[datetime, list[int]] = {}
    for start, kind, wh in session.execute(issued):
        row = totals.setdefault(as_utc(start), [0, 0, 0])
        row[0 if kind == "production" else 1] += int(wh)
    for start, wh in session.execute(claimed):
        totals.setdefault(as_utc(start), [0, 0, 0])[2] += int(wh)
    return [WindowTotal(start, p, c, m) for start, (p, c, m) in sorted(totals.items())]


def reservations_of(*, session: Session, organization_id: int | None) -> list[tuple[int, str]]:
    """(id, wallet) of the organization's reservations (None: every one)."""
    query = select(ReservationRow.id, ReservationRow.wallet).order_by(ReservationRow.id)
    if organization_id is not None:
        query = query.where(ReservationRow.organization_id == organization_id)
    return [(int(i), str(w)) for i, w in session.execute(query)]


def add_claims(
    *,
    session: Session,
    chain_id: int,
    idempotency_key: str,
    claims: Sequence[NewClaim],
    now: datetime,
) -> None:
    if not claims:
        return
    session.execute(
        insert(MatchingClaimRow),
        [
            {
                "chain_id": chain_id,
                "reservation_id": c.reservation_id,
                "window_start": c.window_start,
                "sequence": c.sequence,
                "idempotency_key": idempotency_key,
                "entries": c.entries,
                "claimed_wh": c.claimed_wh,
                "production_wh": c.production_wh,
                "consumption_wh": c.consumption_wh,
                "matched_wh": c.matched_wh,
                "state": SENT,
                "created_at": now,
                "updated_at": now,
            }
            for c in claims
        ],
    )


def settle_claims(
    *,
    session: Session,
    idempotency_key: str,
    state: str,
    tx_hash: str | None,
    block_number: int | None,
    now: datetime,
) -> None:
    session.execute(
        update(MatchingClaimRow)
        .where(MatchingClaimRow.idempotency_key == idempotency_key, MatchingClaimRow.state == SENT)
        .values(state=state, tx_hash=tx_hash, block_number=block_number, updated_at=now)
    )


def set_status(
    *, session: Session, reservation_id: int, state: str, detail: str | None, now: datetime
) -> None:
    row = session.get(MatchingStatusRow, reservation_id)
    if row is None:
        session.add(
            MatchingStatusRow(
                reservation_id=reservation_id, state=state, detail=detail, updated_at=now
            )
        )
    elif (row.state, row.detail) != (state, detail):
        row.state, row.detail, row.updated_at = state, detail, now


def get_status(*, session: Session, reservation_id: int) -> tuple[str, str | None, datetime] | None:
    row = session.get(MatchingStatusRow, reservation_id)
    return None if row is None else (row.state, row.detail, as_utc(row.updated_at))


# --- reports ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedEnergy:
    """One mirrored claim, joined with its production certificate's header fields."""

    claim_id: int
    quantity_wh: int
    consumer: str
    consumption_certificate_id: int
    production_certificate_id: int
    asset_id: str | None
    fuel_code: str | None
    tech_code: str | None
    country: str | None
    period_start: datetime  # the query keeps only certificates whose period is known


def claimed_energy(
    *,
    session: Session,
    wallets: Collection[str] | None,
    period_from: datetime,
    period_to: datetime,
) -> list[ClaimedEnergy]:
    """The mirror's claims whose consumption wallet is in `wallets` (None: any) and whose
    production certificate's period starts in [period_from, period_to)."""
    query = (
        select(
            MirrorClaimRow.id,
            MirrorClaimRow.quantity_wh,
            MirrorClaimRow.consumer,
            MirrorClaimRow.consumption_certificate_id,
            MirrorClaimRow.production_certificate_id,
            MirrorCertificateRow.asset_id,
            MirrorCertificateRow.fuel_code,
            MirrorCertificateRow.tech_code,
            MirrorCertificateRow.country,
            MirrorCertificateRow.period_start,
        )
        .join(
            MirrorCertificateRow,
            MirrorCertificateRow.id == MirrorClaimRow.production_certificate_id,
        )
        .where(
            MirrorCertificateRow.period_start >= period_from,
            MirrorCertificateRow.period_start < period_to,
        )
        .order_by(MirrorClaimRow.id)
    )
    if wallets is not None:
        query = query.where(MirrorClaimRow.consumer.in_(sorted(wallets)))
    return [
        ClaimedEnergy(int(i), int(q), str(w), int(cc), int(pc), a, f, t, c, as_utc(p))
        for i, q, w, cc, pc, a, f, t, c, p in session.execute(query)
    ]


def certified_energy(
    *,
    session: Session,
    wallets: Collection[str] | None,
    period_from: datetime,
    period_to: datetime,
) -> list[tuple[int, datetime, int]]:
    """(kind, period start, Wh) of the mirror's certificates issued to `wallets`."""
    query = select(
        MirrorCertificateRow.kind,
        MirrorCertificateRow.period_start,
        MirrorCertificateRow.quantity_wh,
    ).where(
        MirrorCertificateRow.period_start >= period_from,
        MirrorCertificateRow.period_start < period_to,
    )
    if wallets is not None:
        query = query.where(MirrorCertificateRow.owner.in_(sorted(wallets)))
    return [(int(k), as_utc(p), int(q)) for k, p, q in session.execute(query)]


def wallets_of_organization(*, session: Session, organization_id: int) -> set[str]:
    return set(
        session.scalars(
            select(ReservationRow.wallet).where(ReservationRow.organization_id == organization_id)
        )
    )
