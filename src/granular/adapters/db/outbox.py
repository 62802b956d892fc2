"""The transaction outbox tables (DESIGN.md §6) and every SQL statement that touches them.

- `tx_request`: one on-chain command, unique on (chain id, idempotency key); once signed it
  owns one nonce of its signer, unique on (chain id, signer, nonce). While queued, a request
  whose gas could not be estimated (not a revert) waits until `retry_after`, a backoff that
  grows with `estimate_failures`; the requests behind it are signed meanwhile.
- `tx_attempt`: one signed transaction of a request: the raw bytes, the hash, the fees.
  Every attempt of a request has the request's nonce, target and calldata; only fees differ.
- `tx_nonce`: the next nonce of each (chain id, signer), moved in the transaction that
  stores the attempts using it, so nonces are gapless.
- `tx_lease`: a lease row per sender, for databases without advisory locks (SQLite).

Query functions are keyword-only, never commit (the caller owns the transaction) and return
plain frozen values, never ORM rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import cast

from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, selectinload

from granular.adapters.db.base import Base, as_utc
from granular.domain.outbox import FINAL_STATES, IN_FLIGHT_STATES, RequestState

__all__ = ["FINAL_STATES", "IN_FLIGHT_STATES", "RequestState"]  # their home is domain.outbox

# BIGINT keys everywhere but SQLite, whose rowid alias must be spelled INTEGER.
Id = BigInteger().with_variant(Integer(), "sqlite")


class FeeKindColumn(StrEnum):
    EIP1559 = "eip1559"
    LEGACY = "legacy"


# --- tables -------------------------------------------------------------------------------


class TxRequest(Base):
    __tablename__ = "tx_request"
    __table_args__ = (
        UniqueConstraint("chain_id", "idempotency_key"),
        UniqueConstraint("chain_id", "signer", "nonce"),
        Index("ix_tx_request_sender_state", "chain_id", "signer", "state"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    signer: Mapped[str] = mapped_column(String(42))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    to_address: Mapped[str] = mapped_column(String(42))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    tier: Mapped[str] = mapped_column(String(16))
    items: Mapped[int | None] = mapped_column(Integer)
    gas_limit: Mapped[int | None] = mapped_column(BigInteger)
    nonce: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    block_hash: Mapped[str | None] = mapped_column(String(66))
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_detail: Mapped[str | None] = mapped_column(Text)
    # Gas estimates that failed without a revert, in a row; not signed before retry_after.
    estimate_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    retry_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    attempts: Mapped[list[TxAttempt]] = relationship(
        back_populates="request", order_by="TxAttempt.id", cascade="all, delete-orphan"
    )


class TxAttempt(Base):
    __tablename__ = "tx_attempt"
    __table_args__ = (
        UniqueConstraint("tx_hash"),
        Index("ix_tx_attempt_request_id", "request_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(Id, ForeignKey("tx_request.id", ondelete="CASCADE"))
    nonce: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    raw_tx: Mapped[bytes] = mapped_column(LargeBinary)
    fee_kind: Mapped[str] = mapped_column(String(8))
    max_fee_per_gas_wei: Mapped[int | None] = mapped_column(BigInteger)
    max_priority_fee_per_gas_wei: Mapped[int | None] = mapped_column(BigInteger)
    gas_price_wei: Mapped[int | None] = mapped_column(BigInteger)
    gas_limit: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_block: Mapped[int | None] = mapped_column(BigInteger)
    mined_block: Mapped[int | None] = mapped_column(BigInteger)
    mined_block_hash: Mapped[str | None] = mapped_column(String(66))
    receipt_status: Mapped[int | None] = mapped_column(Integer)

    request: Mapped[TxRequest] = relationship(back_populates="attempts")


class TxNonce(Base):
    __tablename__ = "tx_nonce"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    signer: Mapped[str] = mapped_column(String(42), primary_key=True)
    next_nonce: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TxLease(Base):
    __tablename__ = "tx_lease"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    id: int
    request_id: int
    nonce: int
    tx_hash: str
    raw_tx: bytes
    fee_kind: str
    max_fee_per_gas_wei: int | None
    max_priority_fee_per_gas_wei: int | None
    gas_price_wei: int | None
    gas_limit: int
    created_at: datetime
    sent_at: datetime | None
    sent_block: int | None
    mined_block: int | None
    mined_block_hash: str | None
    receipt_status: int | None


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    chain_id: int
    signer: str
    idempotency_key: str
    to_address: str
    data: bytes
    tier: str
    items: int | None
    gas_limit: int | None
    nonce: int | None
    state: RequestState
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None
    error_code: str | None
    error_detail: str | None
    created_at: datetime
    updated_at: datetime
    estimate_failures: int  # gas estimates failed in a row (not reverts) while queued
    retry_after: datetime | None  # while queued: not signed before this instant
    attempts: tuple[Attempt, ...] = ()

    @property
    def latest_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


def _attempt(row: TxAttempt) -> Attempt:
    return Attempt(
        id=row.id,
        request_id=row.request_id,
        nonce=row.nonce,
        tx_hash=row.tx_hash,
        raw_tx=row.raw_tx,
        fee_kind=row.fee_kind,
        max_fee_per_gas_wei=row.max_fee_per_gas_wei,
        max_priority_fee_per_gas_wei=row.max_priority_fee_per_gas_wei,
        gas_price_wei=row.gas_price_wei,
        gas_limit=row.gas_limit,
        created_at=as_utc(row.created_at),
        sent_at=as_utc(row.sent_at) if row.sent_at is not None else None,
        sent_block=row.sent_block,
        mined_block=row.mined_block,
        mined_block_hash=row.mined_block_hash,
        receipt_status=row.receipt_status,
    )


def _request(row: TxRequest, *, with_attempts: bool) -> Request:
    return Request(
        id=row.id,
        chain_id=row.chain_id,
        signer=row.signer,
        idempotency_key=row.idempotency_key,
        to_address=row.to_address,
        data=row.data,
        tier=row.tier,
        items=row.items,
        gas_limit=row.gas_limit,
        nonce=row.nonce,
        state=RequestState(row.state),
        tx_hash=row.tx_hash,
        block_number=row.block_number,
        block_hash=row.block_hash,
        error_code=row.error_code,
        error_detail=row.error_detail,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        estimate_failures=row.estimate_failures,
        retry_after=as_utc(row.retry_after) if row.retry_after is not None else None,
        attempts=tuple(_attempt(a) for a in row.attempts) if with_attempts else (),
    )


# --- requests -----------------------------------------------------------------------------


def add_request(
    *,
    session: Session,
    chain_id: int,
    signer: str,
    idempotency_key: str,
    to_address: str,
    data: bytes,
    tier: str,
    items: int | None,
    gas_limit: int | None,
    now: datetime,
) -> Request | None:
    """The new request, or None when the key was taken meanwhile (see find_request)."""
    row = TxRequest(
        chain_id=chain_id,
        signer=signer,
        idempotency_key=idempotency_key,
        to_address=to_address,
        data=data,
        tier=tier,
        items=items,
        gas_limit=gas_limit,
        state=RequestState.QUEUED.value,
        estimate_failures=0,
        created_at=now,
        updated_at=now,
    )
    try:
        # A savepoint: a concurrent insert of the same key fails only this statement, and
        # the caller's transaction goes on to read the row the other one committed.
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    return _request(row, with_attempts=False)


def find_request(*, session: Session, chain_id: int, idempotency_key: str) -> Request | None:
    row = session.scalars(
        select(TxRequest)
        .where(TxRequest.chain_id == chain_id, TxRequest.idempotency_key == idempotency_key)
        .options(selectinload(TxRequest.attempts))
    ).one_or_none()
    return _request(row, with_attempts=True) if row is not None else None


def list_requests(
    *,
    session: Session,
    chain_id: int,
    states: Iterable[RequestState] | None = None,
) -> list[Request]:
    """Requests of a chain, with their attempts, by id."""
    query = select(TxRequest).where(TxRequest.chain_id == chain_id)
    if states is not None:
        query = query.where(TxRequest.state.in_([s.value for s in states]))
    rows = session.scalars(query.order_by(TxRequest.id).options(selectinload(TxRequest.attempts)))
    return [_request(row, with_attempts=True) for row in rows]


def queued_requests(
    *, session: Session, chain_id: int, signer: str, now: datetime, limit: int
) -> list[Request]:
    """The oldest requests waiting for a nonce, by id: they get nonces in this order.

    A request backing off (`retry_after` later than `now`) is skipped: it has no nonce yet,
    so the requests behind it may take the next ones.
    """
    rows = session.scalars(
        select(TxRequest)
        .where(
            TxRequest.chain_id == chain_id,
            TxRequest.signer == signer,
            TxRequest.state == RequestState.QUEUED.value,
            or_(TxRequest.retry_after.is_(None), TxRequest.retry_after <= now),
        )
        .order_by(TxRequest.id)
        .limit(limit)
    )
    return [_request(row, with_attempts=False) for row in rows]


@dataclass(frozen=True, slots=True)
class Deferral:
    """A queued request whose gas estimate failed (not a revert): retried after a backoff."""

    request_id: int
    estimate_failures: int
    retry_after: datetime


def defer_requests(*, session: Session, deferrals: Sequence[Deferral], now: datetime) -> None:
    """Store the failure count and the backoff of queued requests, in one statement.

    A request no longer queued is left alone.
    """
    if not deferrals:
        return
    table = cast(Table, TxRequest.__table__)
    session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.state == RequestState.QUEUED.value)
        .values(
            estimate_failures=bindparam("b_failures"),
            retry_after=bindparam("b_retry_after"),
            updated_at=now,
        ),
        [
            {
                "b_id": d.request_id,
                "b_failures": d.estimate_failures,
                "b_retry_after": d.retry_after,
            }
            for d in deferrals
        ],
    )


def in_flight_requests(*, session: Session, chain_id: int, signer: str) -> list[Request]:
    """Signed, sent or mined requests of a signer with their attempts, by nonce."""
    rows = session.scalars(
        select(TxRequest)
        .where(
            TxRequest.chain_id == chain_id,
            TxRequest.signer == signer,
            TxRequest.state.in_([s.value for s in IN_FLIGHT_STATES]),
        )
        .order_by(TxRequest.nonce)
        .options(selectinload(TxRequest.attempts))
    )
    return [_request(row, with_attempts=True) for row in rows]


@dataclass(frozen=True, slots=True)
class StateChange:
    """A request's new state and chain fields (None clears a field)."""

    request_id: int
    state: RequestState
    tx_hash: str | None = None
    block_number: int | None = None
    block_hash: str | None = None
    error_code: str | None = None
    error_detail: str | None = None


def set_request_states(*, session: Session, changes: Sequence[StateChange], now: datetime) -> None:
    """Move requests to their new states, chain fields as given (None clears them), in one
    statement."""
    if not changes:
        return
    table = cast(Table, TxRequest.__table__)
    session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            state=bindparam("b_state"),
            tx_hash=bindparam("b_tx_hash"),
            block_number=bindparam("b_block_number"),
            block_hash=bindparam("b_block_hash"),
            error_code=bindparam("b_error_code"),
            error_detail=bindparam("b_error_detail"),
            updated_at=now,
        ),
        [
            {
                "b_id": c.request_id,
                "b_state": c.state.value,
                "b_tx_hash": c.tx_hash,
                "b_block_number": c.block_number,
                "b_block_hash": c.block_hash,
                "b_error_code": c.error_code,
                "b_error_detail": c.error_detail,
            }
            for c in changes
        ],
    )


# --- attempts -----------------------------------------------------------------------------


def add_attempt(
    *,
    session: Session,
    request_id: int,
    nonce: int,
    tx_hash: str,
    raw_tx: bytes,
    fee_kind: str,
    max_fee_per_gas_wei: int | None,
    max_priority_fee_per_gas_wei: int | None,
    gas_price_wei: int | None,
    gas_limit: int,
    now: datetime,
) -> Attempt:
    """Store a signed attempt. The first one gives the request its nonce and gas limit.

    Raises if the request already owns another nonce: a nonce is never reused for a
    different payload, and a payload never moves to another nonce.
    """
    request = session.get(TxRequest, request_id, with_for_update=True)
    if request is None:
        raise LookupError(f"tx_request {request_id} does not exist")
    if request.nonce is not None and request.nonce != nonce:
        raise ValueError(
            f"tx_request {request_id} owns nonce {request.nonce}; refusing an attempt at {nonce}"
        )
    if request.state == RequestState.QUEUED.value:
        request.state = RequestState.SIGNED.value
    request.nonce = nonce
    request.gas_limit = gas_limit
    request.updated_at = now
    row = TxAttempt(
        request_id=request_id,
        nonce=nonce,
        tx_hash=tx_hash,
        raw_tx=raw_tx,
        fee_kind=fee_kind,
        max_fee_per_gas_wei=max_fee_per_gas_wei,
        max_priority_fee_per_gas_wei=max_priority_fee_per_gas_wei,
        gas_price_wei=gas_price_wei,
        gas_limit=gas_limit,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return _attempt(row)


@dataclass(frozen=True, slots=True)
class NewAttempt:
    """A signed first attempt of a queued request."""

    request_id: int
    nonce: int
    tx_hash: str
    raw_tx: bytes
    fee_kind: str
    max_fee_per_gas_wei: int | None
    max_priority_fee_per_gas_wei: int | None
    gas_price_wei: int | None
    gas_limit: int


def add_first_attempts(
    *, session: Session, attempts: Sequence[NewAttempt], now: datetime
) -> list[Attempt]:
    """Store the first attempts of queued requests: each request takes its attempt's nonce
    and gas limit, becomes `signed` and loses any estimate backoff. Raises if one of them is
    no longer queued."""
    if not attempts:
        return []
    table = cast(Table, TxRequest.__table__)
    result = session.execute(
        update(table)
        .where(
            table.c.id == bindparam("b_id"),
            table.c.state == RequestState.QUEUED.value,
            table.c.nonce.is_(None),
        )
        .values(
            state=RequestState.SIGNED.value,
            nonce=bindparam("b_nonce"),
            gas_limit=bindparam("b_gas_limit"),
            estimate_failures=0,
            retry_after=None,
            updated_at=now,
        ),
        [{"b_id": a.request_id, "b_nonce": a.nonce, "b_gas_limit": a.gas_limit} for a in attempts],
    )
    changed = cast(int, getattr(result, "rowcount", -1))
    if changed != len(attempts):
        raise ValueError(f"{len(attempts) - changed} of the requests were no longer queued")
    rows = session.scalars(
        insert(TxAttempt).returning(TxAttempt, sort_by_parameter_order=True),
        [
            {
                "request_id": a.request_id,
                "nonce": a.nonce,
                "tx_hash": a.tx_hash,
                "raw_tx": a.raw_tx,
                "fee_kind": a.fee_kind,
                "max_fee_per_gas_wei": a.max_fee_per_gas_wei,
                "max_priority_fee_per_gas_wei": a.max_priority_fee_per_gas_wei,
                "gas_price_wei": a.gas_price_wei,
                "gas_limit": a.gas_limit,
                "created_at": now,
            }
            for a in attempts
        ],
    ).all()
    return [_attempt(row) for row in rows]


def mark_sent(*, session: Session, attempt_ids: Sequence[int], now: datetime, block: int) -> None:
    """A node has these attempts: stamp the first broadcast; signed requests become sent."""
    if not attempt_ids:
        return
    session.execute(
        update(TxAttempt)
        .where(TxAttempt.id.in_(attempt_ids), TxAttempt.sent_at.is_(None))
        .values(sent_at=now, sent_block=block)
    )
    session.execute(
        update(TxRequest)
        .where(
            TxRequest.id.in_(select(TxAttempt.request_id).where(TxAttempt.id.in_(attempt_ids))),
            TxRequest.state == RequestState.SIGNED.value,
        )
        .values(state=RequestState.SENT.value, updated_at=now)
    )


@dataclass(frozen=True, slots=True)
class MinedChange:
    """The block an attempt is in, or all None once a reorg took it out."""

    attempt_id: int
    block: int | None
    block_hash: str | None
    status: int | None


def set_attempts_mined(*, session: Session, changes: Sequence[MinedChange]) -> None:
    """Record the blocks attempts are in (or clear them after a reorg), in one statement."""
    if not changes:
        return
    table = cast(Table, TxAttempt.__table__)
    session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            mined_block=bindparam("b_block"),
            mined_block_hash=bindparam("b_block_hash"),
            receipt_status=bindparam("b_status"),
        ),
        [
            {
                "b_id": c.attempt_id,
                "b_block": c.block,
                "b_block_hash": c.block_hash,
                "b_status": c.status,
            }
            for c in changes
        ],
    )


# --- nonces -------------------------------------------------------------------------------


def allocate_nonces(
    *, session: Session, chain_id: int, signer: str, chain_pending: int, count: int, now: datetime
) -> int:
    """Reserve `count` consecutive nonces; returns the first.

    The first is max(stored next nonce, the chain's pending count): nonces used outside the
    outbox (a deployment with the same key) are skipped, never reused. The row is locked
    until the caller commits, together with the attempts that use the nonces.
    """
    state = session.get(TxNonce, (chain_id, signer), with_for_update=True)
    if state is None:
        state = TxNonce(chain_id=chain_id, signer=signer, next_nonce=chain_pending, updated_at=now)
        session.add(state)
    first = max(state.next_nonce, chain_pending)
    state.next_nonce = first + count
    state.updated_at = now
    session.flush()
    return first


def stored_next_nonce(*, session: Session, chain_id: int, signer: str) -> int | None:
    state = session.get(TxNonce, (chain_id, signer))
    return state.next_nonce if state is not None else None


# --- leases -------------------------------------------------------------------------------


def acquire_lease_row(
    *,
    session: Session,
    name: str,
    holder: str,
    now: datetime,
    expires_at: datetime,
    may_take_over: Callable[[str], bool],
) -> bool:
    """Take or renew the lease `name` for `holder`.

    Granted when nobody holds it, when `holder` already does, when it has expired, or when
    `may_take_over(current_holder)` says the current holder is gone (a dead local process).
    """
    row = session.get(TxLease, name, with_for_update=True)
    if row is None:
        session.add(TxLease(name=name, holder=holder, acquired_at=now, expires_at=expires_at))
        session.flush()
        return True
    if row.holder != holder and as_utc(row.expires_at) > now and not may_take_over(row.holder):
        return False
    if row.holder != holder:
        row.acquired_at = now
    row.holder = holder
    row.expires_at = expires_at
    session.flush()
    return True


def release_lease_row(*, session: Session, name: str, holder: str) -> None:
    session.execute(delete(TxLease).where(TxLease.name == name, TxLease.holder == holder))


def try_advisory_lock(*, connection: Connection, key: int) -> bool:
    """PostgreSQL: a session-level advisory lock, held until unlocked or disconnected."""
    locked = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
    return bool(locked)


def advisory_unlock(*, connection: Connection, key: int) -> None:
    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


def connection_alive(*, connection: Connection) -> bool:
    connection.execute(text("SELECT 1"))
    return True


def mined_attempts_above(*, session: Session, chain_id: int, block: int) -> list[bytes]:
    """The signed bytes of every attempt the database holds as mined in a block above
    `block` on `chain_id` (the attempt whose hash the request kept), in (signer, nonce)
    order: what a chain that lost those blocks needs again, in the order it first took them."""
    query = (
        select(TxAttempt.raw_tx)
        .join(TxRequest, TxRequest.id == TxAttempt.request_id)
        .where(
            TxRequest.chain_id == chain_id,
            TxRequest.block_number > block,
            TxAttempt.tx_hash == TxRequest.tx_hash,
        )
        .order_by(TxRequest.signer, TxRequest.nonce)
    )
    return [bytes(raw) for raw in session.scalars(query)]
