"""The registry mirror's tables (DESIGN.md §7) and every SQL statement that touches them.

- `mirror_cursor`: how far the mirror has read one registry: (chain id, registry) -> the last
  indexed block's number and hash. One registry per database: the indexer refuses another.
- `mirror_blocks`: number, hash and parent hash of the recent blocks (the unconfirmed
  window), compared with the chain to find the common ancestor after a reorg.
- `mirror_events`: every registry event as read, unique on (chain id, tx hash, log index),
  with its decoded arguments as JSON: what a reorg replays the derived tables from.
- Derived, rebuilt by folding the events (`domain.mirror.apply`): `mirror_certificates`
  (with the filterable header fields copied from `certificate_headers`), `mirror_slices`,
  `mirror_claims`, `mirror_wallets` (counters from chain, `name` from the API, kept across a
  rebuild), `mirror_operators`. Prefixed `mirror_` so no name collides with the issuer's own
  tables. Kinds and states are stored as the contract's enum numbers.

Functions are keyword-only, never commit (the caller owns the transaction) and return plain
frozen values.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    Select,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from granular.adapters.db.base import Base, as_utc
from granular.adapters.db.headers import CertificateHeaderRow
from granular.domain.mirror import (
    CertificateRecord,
    ClaimRecord,
    EventMeta,
    HeaderFields,
    MirrorState,
    RegistryEvent,
    SliceRecord,
    WalletRecord,
    event_args,
    event_from_args,
    event_name,
)
from granular.domain.slices import Kind, SliceState

Id = BigInteger().with_variant(Integer(), "sqlite")


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


class MirrorCursorRow(Base):
    __tablename__ = "mirror_cursor"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    registry_address: Mapped[str] = mapped_column("registry", String(42), primary_key=True)
    deployment_block: Mapped[int] = mapped_column(BigInteger)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MirrorBlockRow(Base):
    __tablename__ = "mirror_blocks"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(String(66))
    parent_hash: Mapped[str] = mapped_column(String(66))


class MirrorEventRow(Base):
    __tablename__ = "mirror_events"
    __table_args__ = (
        UniqueConstraint("chain_id", "tx_hash", "log_index"),
        Index("ix_mirror_events_block", "chain_id", "block_number", "log_index"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))
    name: Mapped[str] = mapped_column(String(32))
    args: Mapped[str] = mapped_column(Text)


class MirrorCertificateRow(Base):
    __tablename__ = "mirror_certificates"
    __table_args__ = (
        Index("ix_mirror_certificates_asset", "asset_id", "id"),
        Index("ix_mirror_certificates_fuel_country", "fuel_code", "country", "id"),
        Index("ix_mirror_certificates_country", "country", "id"),
        Index("ix_mirror_certificates_period", "period_start", "period_end"),
        Index("ix_mirror_certificates_reservation", "reservation_id", "id"),
        Index("ix_mirror_certificates_owner", "owner", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[int] = mapped_column(SmallInteger)
    quantity_wh: Mapped[int] = mapped_column(BigInteger)
    data_hash: Mapped[str] = mapped_column(String(66))
    owner: Mapped[str] = mapped_column(String(42))
    tx_hash: Mapped[str] = mapped_column(String(66))
    block_number: Mapped[int] = mapped_column(BigInteger)
    batch_id: Mapped[str | None] = mapped_column(String(66))
    asset_id: Mapped[str | None] = mapped_column(String(200))
    fuel_code: Mapped[str | None] = mapped_column(String(32))
    tech_code: Mapped[str | None] = mapped_column(String(32))
    country: Mapped[str | None] = mapped_column(String(8))
    period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reservation_id: Mapped[str | None] = mapped_column(String(64))


class MirrorSliceRow(Base):
    __tablename__ = "mirror_slices"
    __table_args__ = (
        Index("ix_mirror_slices_owner_state", "owner", "state", "id"),
        Index("ix_mirror_slices_state", "state", "id"),
        Index("ix_mirror_slices_certificate", "certificate_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    certificate_id: Mapped[int] = mapped_column(BigInteger)
    owner: Mapped[str] = mapped_column(String(42))
    kind: Mapped[int] = mapped_column(SmallInteger)
    state: Mapped[int] = mapped_column(SmallInteger)
    quantity_wh: Mapped[int] = mapped_column(BigInteger)
    parent_id: Mapped[int | None] = mapped_column(BigInteger)
    block_number: Mapped[int] = mapped_column(BigInteger)


class MirrorClaimRow(Base):
    __tablename__ = "mirror_claims"
    __table_args__ = (
        Index("ix_mirror_claims_claimant", "claimant", "id"),
        Index("ix_mirror_claims_consumer", "consumer", "id"),
        Index("ix_mirror_claims_production_certificate", "production_certificate_id"),
        Index("ix_mirror_claims_consumption_certificate", "consumption_certificate_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    production_slice_id: Mapped[int] = mapped_column(BigInteger)
    consumption_slice_id: Mapped[int] = mapped_column(BigInteger)
    production_certificate_id: Mapped[int] = mapped_column(BigInteger)
    consumption_certificate_id: Mapped[int] = mapped_column(BigInteger)
    quantity_wh: Mapped[int] = mapped_column(BigInteger)
    claimant: Mapped[str] = mapped_column(String(42))
    consumer: Mapped[str] = mapped_column(String(42))
    tx_hash: Mapped[str] = mapped_column(String(66))
    block_number: Mapped[int] = mapped_column(BigInteger)


class MirrorWalletRow(Base):
    __tablename__ = "mirror_wallets"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    closed: Mapped[bool] = mapped_column(Boolean)
    active_slices: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str | None] = mapped_column(String(200))


class MirrorOperatorRow(Base):
    __tablename__ = "mirror_operators"

    wallet: Mapped[str] = mapped_column(String(42), primary_key=True)
    operator: Mapped[str] = mapped_column(String(42), primary_key=True)
    approved: Mapped[bool] = mapped_column(Boolean)


DERIVED: tuple[type[Base], ...] = (
    MirrorCertificateRow,
    MirrorSliceRow,
    MirrorClaimRow,
    MirrorOperatorRow,
)


# --- cursor and blocks --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    chain_id: int
    registry: str
    deployment_block: int
    block_number: int
    block_hash: str


def get_cursors(*, session: Session) -> list[Cursor]:
    rows = session.scalars(select(MirrorCursorRow)).all()
    return [
        Cursor(r.chain_id, r.registry_address, r.deployment_block, r.block_number, r.block_hash)
        for r in rows
    ]


def put_cursor(*, session: Session, cursor: Cursor, now: datetime) -> None:
    row = session.get(MirrorCursorRow, (cursor.chain_id, cursor.registry))
    if row is None:
        session.add(
            MirrorCursorRow(
                chain_id=cursor.chain_id,
                registry_address=cursor.registry,
                deployment_block=cursor.deployment_block,
                block_number=cursor.block_number,
                block_hash=cursor.block_hash,
                updated_at=now,
            )
        )
        return
    row.block_number = cursor.block_number
    row.block_hash = cursor.block_hash
    row.updated_at = now


def recent_blocks(*, session: Session, chain_id: int) -> list[tuple[int, str, str]]:
    """(number, hash, parent hash) of the kept blocks, highest first."""
    rows = session.execute(
        select(MirrorBlockRow.number, MirrorBlockRow.hash, MirrorBlockRow.parent_hash)
        .where(MirrorBlockRow.chain_id == chain_id)
        .order_by(MirrorBlockRow.number.desc())
    ).tuples()
    return list(rows)


def put_blocks(
    *, session: Session, chain_id: int, blocks: Iterable[tuple[int, str, str]], keep_from: int
) -> None:
    """Store blocks (replacing any at the same numbers) and forget those below `keep_from`."""
    wanted = list(blocks)
    numbers = [number for number, _, _ in wanted]
    session.execute(
        delete(MirrorBlockRow).where(
            MirrorBlockRow.chain_id == chain_id,
            (MirrorBlockRow.number < keep_from) | MirrorBlockRow.number.in_(numbers),
        )
    )
    if wanted:
        session.execute(
            insert(MirrorBlockRow),
            [
                {"chain_id": chain_id, "number": n, "hash": h, "parent_hash": p}
                for n, h, p in wanted
            ],
        )


# --- raw events ---------------------------------------------------------------------------


def put_events(*, session: Session, chain_id: int, events: Sequence[RegistryEvent]) -> None:
    if not events:
        return
    _insert_plain(
        session,
        MirrorEventRow,
        [
            {
                "chain_id": chain_id,
                "tx_hash": e.meta.tx_hash,
                "log_index": e.meta.log_index,
                "block_number": e.meta.block_number,
                "block_hash": e.meta.block_hash,
                "name": event_name(e),
                "args": json.dumps(event_args(e), separators=(",", ":")),
            }
            for e in events
        ],
    )


def stored_events(
    *, session: Session, chain_id: int, after_id: int = 0, limit: int = 10_000
) -> list[tuple[int, RegistryEvent]]:
    """Stored events in chain order, as (row id, event), `limit` at a time after `after_id`.
    Row ids grow with chain order: events are stored in chain order and a reorg deletes
    only the highest blocks."""
    rows = session.execute(
        select(MirrorEventRow)
        .where(MirrorEventRow.chain_id == chain_id, MirrorEventRow.id > after_id)
        .order_by(MirrorEventRow.id)
        .limit(limit)
    ).scalars()
    return [
        (
            r.id,
            event_from_args(
                r.name,
                EventMeta(r.block_number, r.block_hash, r.tx_hash, r.log_index),
                json.loads(r.args),
            ),
        )
        for r in rows
    ]


def delete_events_above(*, session: Session, chain_id: int, block_number: int) -> int:
    result = session.execute(
        delete(MirrorEventRow).where(
            MirrorEventRow.chain_id == chain_id, MirrorEventRow.block_number > block_number
        )
    )
    session.execute(
        delete(MirrorBlockRow).where(
            MirrorBlockRow.chain_id == chain_id, MirrorBlockRow.number > block_number
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def clear_mirror(*, session: Session, keep_events: bool) -> None:
    """Empty the derived tables (wallet names kept, counters reset); with `keep_events`
    False also the raw events, blocks and cursor."""
    for table in DERIVED:
        session.execute(delete(table))
    session.execute(delete(MirrorWalletRow).where(MirrorWalletRow.name.is_(None)))
    session.execute(update(MirrorWalletRow).values(closed=False, active_slices=0))
    if not keep_events:
        session.execute(delete(MirrorEventRow))
        session.execute(delete(MirrorBlockRow))
        session.execute(delete(MirrorCursorRow))


# --- derived state: load and save ---------------------------------------------------------


@dataclass
class Loaded:
    """The state an event batch starts from, and which of its rows exist in the database."""

    state: MirrorState
    existing_certificates: set[int]
    existing_slices: set[int]
    existing_wallets: set[str]
    existing_operators: set[tuple[str, str]]


def _chunks(values: Collection[Any], size: int = 900) -> Iterable[list[Any]]:
    items = list(values)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def load_state(
    *,
    session: Session,
    slice_ids: Collection[int],
    wallets: Collection[str],
    operators: Collection[tuple[str, str]] = (),
) -> Loaded:
    state = MirrorState()
    for chunk in _chunks(slice_ids):
        for s in session.scalars(select(MirrorSliceRow).where(MirrorSliceRow.id.in_(chunk))):
            state.slices[s.id] = SliceRecord(
                slice_id=s.id,
                certificate_id=s.certificate_id,
                owner=s.owner,
                kind=Kind(s.kind),
                state=SliceState(s.state),
                quantity_wh=s.quantity_wh,
                parent_id=s.parent_id,
                block_number=s.block_number,
            )
        for c in session.scalars(
            select(MirrorCertificateRow).where(MirrorCertificateRow.id.in_(chunk))
        ):
            state.certificates[c.id] = CertificateRecord(
                certificate_id=c.id,
                kind=Kind(c.kind),
                quantity_wh=c.quantity_wh,
                data_hash=c.data_hash,
                owner=c.owner,
                tx_hash=c.tx_hash,
                block_number=c.block_number,
                batch_id=c.batch_id,
            )
    # The owners of the loaded slices too: a claim or split event names slices, not
    # wallets, yet changes their owners' counters (a chunk of whole-slice claims alone
    # would otherwise count from 0 and insert a wallet row that exists).
    wallets = set(wallets) | {s.owner for s in state.slices.values()}
    for chunk in _chunks(wallets):
        for w in session.scalars(select(MirrorWalletRow).where(MirrorWalletRow.address.in_(chunk))):
            state.wallets[w.address] = WalletRecord(w.address, w.closed, w.active_slices)
    for wallet, operator in operators:
        found = session.get(MirrorOperatorRow, (wallet, operator))
        if found is not None:
            state.operators[(wallet, operator)] = found.approved
    return Loaded(
        state=state,
        existing_certificates=set(state.certificates),
        existing_slices=set(state.slices),
        existing_wallets=set(state.wallets),
        existing_operators=set(state.operators),
    )


def _certificate_values(c: CertificateRecord, fields: HeaderFields | None) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": c.certificate_id,
        "kind": int(c.kind),
        "quantity_wh": c.quantity_wh,
        "data_hash": c.data_hash,
        "owner": c.owner,
        "tx_hash": c.tx_hash,
        "block_number": c.block_number,
        "batch_id": c.batch_id,
    }
    if fields is not None:
        values.update(
            asset_id=fields.asset_id,
            fuel_code=fields.fuel_code,
            tech_code=fields.tech_code,
            country=fields.country,
            period_start=fields.period_start,
            period_end=fields.period_end,
            reservation_id=fields.reservation_id,
        )
    return values


def _slice_values(s: SliceRecord) -> dict[str, Any]:
    return {
        "id": s.slice_id,
        "certificate_id": s.certificate_id,
        "owner": s.owner,
        "kind": int(s.kind),
        "state": int(s.state),
        "quantity_wh": s.quantity_wh,
        "parent_id": s.parent_id,
        "block_number": s.block_number,
    }


def _claim_values(c: ClaimRecord) -> dict[str, Any]:
    return {
        "id": c.claim_id,
        "production_slice_id": c.production_slice_id,
        "consumption_slice_id": c.consumption_slice_id,
        "production_certificate_id": c.production_certificate_id,
        "consumption_certificate_id": c.consumption_certificate_id,
        "quantity_wh": c.quantity_wh,
        "claimant": c.claimant,
        "consumer": c.consumer,
        "tx_hash": c.tx_hash,
        "block_number": c.block_number,
    }


def _insert_plain(session: Session, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """Bulk INSERT past SQLAlchemy's per-row parameter processing (the indexer's largest
    cost): COPY on PostgreSQL (psycopg's executemany is one statement per row), the
    driver's executemany on SQLite. Only for rows of ints, strings and NULLs: no value here
    needs a type's bind processing (datetimes do, on SQLite)."""
    if not rows:
        return
    connection = session.connection()
    names = list(rows[0])
    table = _table(model).name
    tuples = [tuple(row[name] for name in names) for row in rows]
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        assert driver is not None
        with (
            driver.cursor() as cursor,
            cursor.copy(f'COPY "{table}" ({", ".join(names)}) FROM STDIN') as copy,
        ):
            for values in tuples:
                copy.write_row(values)
        return
    marks = ", ".join(["?"] * len(names))
    connection.exec_driver_sql(
        f'INSERT INTO "{table}" ({", ".join(names)}) VALUES ({marks})', tuples
    )


def _split_upsert(
    session: Session,
    model: type[Base],
    rows: list[dict[str, Any]],
    existing: Collection[Any],
    key: str,
    *,
    plain: bool = False,
) -> None:
    """Core executemany (the ORM's bulk paths cost more than the database here): an INSERT
    of the new rows, an UPDATE by primary key of the loaded ones."""
    table = _table(model)
    new = [r for r in rows if r[key] not in existing]
    old = [{**r, "_key": r[key]} for r in rows if r[key] in existing]
    if new and plain:
        _insert_plain(session, model, new)
    elif new:
        session.connection().execute(table.insert(), new)
    if old:
        column = table.c[key]
        values: dict[str, Any] = {
            name: bindparam(name) for name in old[0] if name not in ("_key", key)
        }
        statement = table.update().where(column == bindparam("_key")).values(values)
        session.connection().execute(statement, old)


def save_state(
    *, session: Session, loaded: Loaded, headers: dict[int, HeaderFields] | None = None
) -> None:
    """Write back the rows the state marks as changed: inserts for new rows, updates by
    primary key for loaded ones. `headers` gives header fields of new certificates."""
    state = loaded.state
    headers = headers or {}
    _split_upsert(
        session,
        MirrorCertificateRow,
        [
            _certificate_values(
                state.certificates[i],
                None if i in loaded.existing_certificates else headers.get(i, HeaderFields()),
            )
            for i in sorted(state.changed_certificates)
        ],
        loaded.existing_certificates,
        "id",
    )
    _split_upsert(
        session,
        MirrorSliceRow,
        [_slice_values(state.slices[i]) for i in sorted(state.changed_slices)],
        loaded.existing_slices,
        "id",
        plain=True,
    )
    _insert_plain(
        session,
        MirrorClaimRow,
        [_claim_values(state.claims[i]) for i in sorted(state.changed_claims)],
    )
    _split_upsert(
        session,
        MirrorWalletRow,
        [
            {
                "address": a,
                "closed": state.wallets[a].closed,
                "active_slices": state.wallets[a].active_slices,
            }
            for a in sorted(state.changed_wallets)
        ],
        loaded.existing_wallets,
        "address",
    )
    for wallet, operator in sorted(state.changed_operators):
        approved = state.operators[(wallet, operator)]
        if (wallet, operator) in loaded.existing_operators:
            session.execute(
                update(MirrorOperatorRow)
                .where(MirrorOperatorRow.wallet == wallet, MirrorOperatorRow.operator == operator)
                .values(approved=approved)
            )
        else:
            session.add(MirrorOperatorRow(wallet=wallet, operator=operator, approved=approved))
    session.flush()


# --- reads for the API --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateView:
    id: int
    kind: Kind
    quantity_wh: int
    data_hash: str
    owner: str
    tx_hash: str
    block_number: int
    batch_id: str | None
    asset_id: str | None
    fuel_code: str | None
    tech_code: str | None
    country: str | None
    period_start: datetime | None
    period_end: datetime | None
    reservation_id: str | None
    header_json: str | None


@dataclass(frozen=True, slots=True)
class SliceView:
    id: int
    certificate_id: int
    owner: str
    kind: Kind
    state: SliceState
    quantity_wh: int
    parent_id: int | None
    block_number: int


@dataclass(frozen=True, slots=True)
class ClaimView:
    id: int
    production_slice_id: int
    consumption_slice_id: int
    production_certificate_id: int
    consumption_certificate_id: int
    quantity_wh: int
    claimant: str
    consumer: str
    tx_hash: str
    block_number: int


@dataclass(frozen=True, slots=True)
class WalletView:
    address: str
    closed: bool
    active_slices: int
    name: str | None
    operators: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Filters:
    """List filters; None means no filter. Header fields filter through the certificate."""

    owner: str | None = None
    state: SliceState | None = None
    kind: Kind | None = None
    asset_id: str | None = None
    fuel_code: str | None = None
    tech_code: str | None = None
    country: str | None = None
    period_from: datetime | None = None  # certificates whose period starts at or after this
    period_to: datetime | None = None  # certificates whose period ends at or before this
    reservation_id: str | None = None
    certificate_id: int | None = None


@dataclass(frozen=True, slots=True)
class Page:
    after_id: int | None = None
    limit: int = 50
    descending: bool = False


def _certificate_filters(query: Select[Any], f: Filters) -> Select[Any]:
    c = MirrorCertificateRow
    if f.asset_id is not None:
        query = query.where(c.asset_id == f.asset_id)
    if f.fuel_code is not None:
        query = query.where(c.fuel_code == f.fuel_code)
    if f.tech_code is not None:
        query = query.where(c.tech_code == f.tech_code)
    if f.country is not None:
        query = query.where(c.country == f.country)
    if f.period_from is not None:
        query = query.where(c.period_start >= f.period_from)
    if f.period_to is not None:
        # period_start < period_to follows from period_end <= period_to; said explicitly, it
        # bounds the index range on period_start from both sides.
        query = query.where(c.period_end <= f.period_to, c.period_start < f.period_to)
    if f.reservation_id is not None:
        query = query.where(c.reservation_id == f.reservation_id)
    return query


def _needs_certificate(f: Filters) -> bool:
    return any(
        v is not None
        for v in (
            f.asset_id,
            f.fuel_code,
            f.tech_code,
            f.country,
            f.period_from,
            f.period_to,
            f.reservation_id,
        )
    )


# Header filters first find the matching certificates (without an order, so the database
# combines its header indexes); up to this many, the slices or claims are then looked up by
# certificate id. A filter that matches more is not selective, and the join walking the id
# order finds a page quickly. Without this, a rare combination (a fuel never produced in a
# country) walks every row in id order looking for a match that is not there.
SELECTIVE_CERTIFICATES = 1_000


def _selective_certificates(session: Session, filters: Filters) -> list[int] | None:
    if not _needs_certificate(filters):
        return None
    query = _certificate_filters(select(MirrorCertificateRow.id), filters)
    ids = list(session.scalars(query.limit(SELECTIVE_CERTIFICATES + 1)))
    return None if len(ids) > SELECTIVE_CERTIFICATES else ids


def _page(query: Select[Any], column: Any, page: Page) -> Select[Any]:
    if page.after_id is not None:
        query = query.where(column < page.after_id if page.descending else column > page.after_id)
    return query.order_by(column.desc() if page.descending else column).limit(page.limit + 1)


def _certificate_view(row: MirrorCertificateRow, header_json: str | None) -> CertificateView:
    return CertificateView(
        id=row.id,
        kind=Kind(row.kind),
        quantity_wh=row.quantity_wh,
        data_hash=row.data_hash,
        owner=row.owner,
        tx_hash=row.tx_hash,
        block_number=row.block_number,
        batch_id=row.batch_id,
        asset_id=row.asset_id,
        fuel_code=row.fuel_code,
        tech_code=row.tech_code,
        country=row.country,
        period_start=as_utc(row.period_start) if row.period_start else None,
        period_end=as_utc(row.period_end) if row.period_end else None,
        reservation_id=row.reservation_id,
        header_json=header_json,
    )


def _slice_view(row: MirrorSliceRow) -> SliceView:
    return SliceView(
        id=row.id,
        certificate_id=row.certificate_id,
        owner=row.owner,
        kind=Kind(row.kind),
        state=SliceState(row.state),
        quantity_wh=row.quantity_wh,
        parent_id=row.parent_id,
        block_number=row.block_number,
    )


def _claim_view(row: MirrorClaimRow) -> ClaimView:
    return ClaimView(
        id=row.id,
        production_slice_id=row.production_slice_id,
        consumption_slice_id=row.consumption_slice_id,
        production_certificate_id=row.production_certificate_id,
        consumption_certificate_id=row.consumption_certificate_id,
        quantity_wh=row.quantity_wh,
        claimant=row.claimant,
        consumer=row.consumer,
        tx_hash=row.tx_hash,
        block_number=row.block_number,
    )


def list_certificates(*, session: Session, filters: Filters, page: Page) -> list[CertificateView]:
    """Certificates matching `filters`, keyset-paged on id (`page.limit + 1` rows, so the
    caller knows whether there is a next page). `owner` is the owner at issue; `state` keeps
    certificates with at least one slice in that state."""
    c = MirrorCertificateRow
    selective = _selective_certificates(session, filters)
    if selective == []:
        return []
    query = select(c)
    if selective is None:
        query = _certificate_filters(query, filters)
    else:
        query = query.where(c.id.in_(selective))
    if filters.owner is not None:
        query = query.where(c.owner == filters.owner)
    if filters.kind is not None:
        query = query.where(c.kind == int(filters.kind))
    if filters.state is not None:
        query = query.where(
            select(MirrorSliceRow.id)
            .where(
                MirrorSliceRow.certificate_id == c.id, MirrorSliceRow.state == int(filters.state)
            )
            .exists()
        )
    rows = session.scalars(_page(query, c.id, page)).all()
    return [_certificate_view(r, None) for r in rows]


def get_certificate(
    *, session: Session, certificate_id: int
) -> tuple[CertificateView, list[SliceView], list[ClaimView]] | None:
    row = session.get(MirrorCertificateRow, certificate_id)
    if row is None:
        return None
    header = session.get(CertificateHeaderRow, row.data_hash)
    slices = session.scalars(
        select(MirrorSliceRow)
        .where(MirrorSliceRow.certificate_id == certificate_id)
        .order_by(MirrorSliceRow.id)
    ).all()
    claims = session.scalars(
        select(MirrorClaimRow)
        .where(
            (MirrorClaimRow.production_certificate_id == certificate_id)
            | (MirrorClaimRow.consumption_certificate_id == certificate_id)
        )
        .order_by(MirrorClaimRow.id)
    ).all()
    return (
        _certificate_view(row, header.header_json if header else None),
        [_slice_view(s) for s in slices],
        [_claim_view(c) for c in claims],
    )


def list_slices(*, session: Session, filters: Filters, page: Page) -> list[SliceView]:
    s = MirrorSliceRow
    query = select(s)
    if filters.owner is not None:
        query = query.where(s.owner == filters.owner)
    if filters.state is not None:
        query = query.where(s.state == int(filters.state))
    if filters.kind is not None:
        query = query.where(s.kind == int(filters.kind))
    if filters.certificate_id is not None:
        query = query.where(s.certificate_id == filters.certificate_id)
    selective = _selective_certificates(session, filters)
    if selective == []:
        return []
    if selective is not None:
        query = query.where(s.certificate_id.in_(selective))
    elif _needs_certificate(filters):
        query = _certificate_filters(
            query.join(MirrorCertificateRow, MirrorCertificateRow.id == s.certificate_id),
            filters,
        )
    return [_slice_view(r) for r in session.scalars(_page(query, s.id, page)).all()]


def get_slice(*, session: Session, slice_id: int) -> SliceView | None:
    row = session.get(MirrorSliceRow, slice_id)
    return None if row is None else _slice_view(row)


def list_claims(*, session: Session, filters: Filters, page: Page) -> list[ClaimView]:
    """Claims; `owner` matches the claimant or the consumer, header filters match the
    production certificate."""
    c = MirrorClaimRow
    query = select(c)
    if filters.owner is not None:
        query = query.where((c.claimant == filters.owner) | (c.consumer == filters.owner))
    if filters.certificate_id is not None:
        query = query.where(
            (c.production_certificate_id == filters.certificate_id)
            | (c.consumption_certificate_id == filters.certificate_id)
        )
    selective = _selective_certificates(session, filters)
    if selective == []:
        return []
    if selective is not None:
        query = query.where(c.production_certificate_id.in_(selective))
    elif _needs_certificate(filters):
        query = _certificate_filters(
            query.join(
                MirrorCertificateRow, MirrorCertificateRow.id == c.production_certificate_id
            ),
            filters,
        )
    return [_claim_view(r) for r in session.scalars(_page(query, c.id, page)).all()]


def get_claim(*, session: Session, claim_id: int) -> ClaimView | None:
    row = session.get(MirrorClaimRow, claim_id)
    return None if row is None else _claim_view(row)


def _operators_of(session: Session, wallets: Collection[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for chunk in _chunks(wallets):
        for wallet, operator in session.execute(
            select(MirrorOperatorRow.wallet, MirrorOperatorRow.operator)
            .where(MirrorOperatorRow.wallet.in_(chunk), MirrorOperatorRow.approved.is_(True))
            .order_by(MirrorOperatorRow.operator)
        ).tuples():
            found.setdefault(wallet, []).append(operator)
    return found


def list_wallets(
    *, session: Session, closed: bool | None, after: str | None, limit: int, descending: bool
) -> list[WalletView]:
    """Wallets keyset-paged on address (`limit + 1` rows)."""
    w = MirrorWalletRow
    query = select(w)
    if closed is not None:
        query = query.where(w.closed.is_(closed))
    if after is not None:
        query = query.where(w.address < after if descending else w.address > after)
    query = query.order_by(w.address.desc() if descending else w.address).limit(limit + 1)
    rows = session.scalars(query).all()
    operators = _operators_of(session, [r.address for r in rows])
    return [
        WalletView(
            r.address, r.closed, r.active_slices, r.name, tuple(operators.get(r.address, ()))
        )
        for r in rows
    ]


def get_wallet(*, session: Session, address: str) -> WalletView | None:
    row = session.get(MirrorWalletRow, address)
    if row is None:
        return None
    operators = _operators_of(session, [address])
    return WalletView(
        row.address, row.closed, row.active_slices, row.name, tuple(operators.get(address, ()))
    )


def is_operator(*, session: Session, wallet: str, operator: str) -> bool:
    row = session.get(MirrorOperatorRow, (wallet, operator))
    return bool(row is not None and row.approved)


def set_wallet_name(*, session: Session, address: str, name: str | None) -> None:
    """Name a wallet (an API-side label; the chain knows no names). A wallet the chain has
    not mentioned yet gets a row with zero counters; the indexer keeps the name."""
    row = session.get(MirrorWalletRow, address)
    if row is None:
        session.add(MirrorWalletRow(address=address, closed=False, active_slices=0, name=name))
    else:
        row.name = name


# --- advanced claims ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimCandidate:
    """An Active production slice with its certificate's header fields."""

    slice_id: int
    quantity_wh: int
    certificate_id: int
    period_start: datetime | None
    period_end: datetime | None
    fuel_code: str | None
    tech_code: str | None
    country: str | None


def certificate_period(
    *, session: Session, certificate_id: int
) -> tuple[datetime, datetime] | None:
    """The certificate's period from its header, or None (not mirrored yet, or no header)."""
    row = session.get(MirrorCertificateRow, certificate_id)
    if row is None or row.period_start is None or row.period_end is None:
        return None
    return as_utc(row.period_start), as_utc(row.period_end)


def claim_candidates(
    *,
    session: Session,
    owner: str,
    overlapping: tuple[datetime, datetime] | None,
    limit: int,
) -> list[ClaimCandidate]:
    """The owner's Active production slices (those whose certificate's period overlaps
    `overlapping`, when given), oldest first, at most `limit`."""
    s, c = MirrorSliceRow, MirrorCertificateRow
    query = (
        select(
            s.id,
            s.quantity_wh,
            s.certificate_id,
            c.period_start,
            c.period_end,
            c.fuel_code,
            c.tech_code,
            c.country,
        )
        .join(c, c.id == s.certificate_id)
        .where(
            s.owner == owner,
            s.state == int(SliceState.ACTIVE),
            s.kind == int(Kind.PRODUCTION),
        )
    )
    if overlapping is not None:
        start, end = overlapping
        query = query.where(c.period_start < end, c.period_end > start)
    rows = session.execute(query.order_by(s.id).limit(limit)).all()
    return [
        ClaimCandidate(
            slice_id=row.id,
            quantity_wh=row.quantity_wh,
            certificate_id=row.certificate_id,
            period_start=None if row.period_start is None else as_utc(row.period_start),
            period_end=None if row.period_end is None else as_utc(row.period_end),
            fuel_code=row.fuel_code,
            tech_code=row.tech_code,
            country=row.country,
        )
        for row in rows
    ]
