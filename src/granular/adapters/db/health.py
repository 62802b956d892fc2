"""What /healthz and /metrics read from the database: one snapshot, a handful of aggregates.

Everything here is derived from stored state, so every replica (and `granular serve` on
its own) reports the same figures, and a restart loses none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from granular.adapters.db.base import as_utc
from granular.adapters.db.outbox import FINAL_STATES, RequestState, TxLease, TxRequest
from granular.adapters.db.readings import ReadSubmissionRow


@dataclass(frozen=True, slots=True)
class LeaseRow:
    name: str
    holder: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    reads_accepted: int
    reads_not_accepted: int  # rejected, or a duplicate of a read already stored
    outbox_queue_depth: int  # requests not yet final, every chain
    outbox_oldest_created_at: datetime | None
    last_confirmed_block: int | None
    leases: tuple[LeaseRow, ...]


def ping(*, session: Session) -> None:
    """Raises the driver's error when the database does not answer."""
    session.execute(text("SELECT 1"))


def snapshot(*, session: Session, chain_id: int | None, now: datetime) -> HealthSnapshot:
    """The aggregates of the metrics page; `chain_id` None: every chain."""
    read_count, accepted_count = session.execute(
        select(
            func.coalesce(func.sum(ReadSubmissionRow.read_count), 0),
            func.coalesce(func.sum(ReadSubmissionRow.accepted_count), 0),
        )
    ).one()
    pending = select(func.count(), func.min(TxRequest.created_at)).where(
        TxRequest.state.not_in([state.value for state in FINAL_STATES])
    )
    confirmed = select(func.max(TxRequest.block_number)).where(
        TxRequest.state == RequestState.CONFIRMED.value
    )
    if chain_id is not None:
        pending = pending.where(TxRequest.chain_id == chain_id)
        confirmed = confirmed.where(TxRequest.chain_id == chain_id)
    depth, oldest = session.execute(pending).one()
    last_block = session.scalar(confirmed)
    leases = tuple(
        LeaseRow(row.name, row.holder, as_utc(row.expires_at))
        for row in session.scalars(select(TxLease).where(TxLease.expires_at > now))
    )
    return HealthSnapshot(
        reads_accepted=int(accepted_count),
        reads_not_accepted=int(read_count) - int(accepted_count),
        outbox_queue_depth=int(depth),
        outbox_oldest_created_at=None if oldest is None else as_utc(oldest),
        last_confirmed_block=None if last_block is None else int(last_block),
        leases=leases,
    )
