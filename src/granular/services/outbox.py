"""Use cases of the transaction outbox (DESIGN.md §6).

- `submit` adds a request inside the caller's database transaction (with the issuance
  items it carries), idempotent on its key: the same key returns the same request.
- `send_once` / `run` drive the sender (one per signing key and chain; the daemon's job).
- `config_from_settings` builds the sender's configuration from `config.Settings`.

The sender is in parts, each stating its guarantee: `outbox_sender` (the round and its
lease), `outbox_broadcaster` (sign, store, then send), `outbox_confirmer` (receipts, depth
K, reorgs, reverts; its decisions are `domain.outbox.decide`), `outbox_resender` (+12.5 %
replacements under the fee cap); the node client is `adapters.chain.rpc`.
- `outcome` tells the caller where a request is and, once final, the transaction hash the
  chain kept, to store on its records.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db import outbox as db
from granular.adapters.db.outbox import Request
from granular.domain.addresses import InvalidAddress, checksum_address
from granular.domain.gas import Tier
from granular.domain.outbox import (
    FINAL_STATES,
    NonceTakenByForeignTransaction,
    OutboxError,
    RequestState,
)
from granular.errors import FieldRuleError, GranularError, ValidationError
from granular.services.outbox_common import (
    AFTER_BROADCAST_BEFORE_MARK,
    AFTER_COMMIT_BEFORE_BROADCAST,
    LOGGER_NAME,
    ChainIdMismatch,
    Outcome,
    SendReport,
    fees_of,
)
from granular.services.outbox_config import OutboxConfig, OutboxConfigInvalid, config_from_settings
from granular.services.outbox_sender import OutboxSender

__all__ = [
    "AFTER_BROADCAST_BEFORE_MARK",
    "AFTER_COMMIT_BEFORE_BROADCAST",
    "FINAL_STATES",
    "LOGGER_NAME",
    "ChainIdMismatch",
    "IdempotencyConflict",
    "InvalidAddress",
    "InvalidRequest",
    "NonceTakenByForeignTransaction",
    "OutboxConfig",
    "OutboxConfigInvalid",
    "OutboxError",
    "OutboxSender",
    "Outcome",
    "RequestOutcome",
    "RequestState",
    "SendReport",
    "Submitted",
    "config_from_settings",
    "fees_of",
    "outcome",
    "outcomes",
    "replay_lost_blocks",
    "run",
    "send_once",
    "submit",
]

MAX_KEY_LENGTH = 200


class IdempotencyConflict(GranularError):
    """The key was submitted before with another payload: a bug in the caller."""

    code = "idempotency_conflict"

    def __init__(self, key: str, field: str) -> None:
        self.idempotency_key = key
        self.field = field
        super().__init__(
            f"idempotency key {key!r} was submitted before with a different {field}; "
            "a key names exactly one command"
        )


class InvalidRequest(FieldRuleError, ValidationError):
    code = "invalid_tx_request"


@dataclass(frozen=True, slots=True)
class Submitted:
    request_id: int
    idempotency_key: str
    state: RequestState
    created: bool  # False: the key was known and nothing was added


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """Where a request is. `tx_hash` is final once `final` is True (the mined attempt).

    `retry_after`: a queued request whose gas could not be estimated (not a revert) is not
    signed before this instant; None otherwise.
    """

    request_id: int
    idempotency_key: str
    state: RequestState
    nonce: int | None
    tx_hash: str | None
    block_number: int | None
    error_code: str | None
    error_detail: str | None
    attempts: int
    retry_after: datetime | None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def _outcome(request: Request) -> RequestOutcome:
    return RequestOutcome(
        request_id=request.id,
        idempotency_key=request.idempotency_key,
        state=request.state,
        nonce=request.nonce,
        tx_hash=request.tx_hash,
        block_number=request.block_number,
        error_code=request.error_code,
        error_detail=request.error_detail,
        attempts=len(request.attempts),
        retry_after=request.retry_after,
    )


def submit(
    *,
    session: Session,
    chain_id: int,
    signer: str,
    idempotency_key: str,
    to: str,
    data: bytes,
    tier: Tier = Tier.STANDARD,
    items: int | None = None,
    gas_limit: int | None = None,
    now: datetime | None = None,
) -> Submitted:
    """Add a tx request in the caller's transaction (not committed here).

    The same key with the same payload returns the existing request (`created=False`);
    with another target, calldata, signer or tier it raises IdempotencyConflict.
    gas_limit: None lets the sender estimate it (plus a margin) before signing.
    """
    if not idempotency_key or len(idempotency_key) > MAX_KEY_LENGTH:
        raise InvalidRequest(
            "idempotency_key", idempotency_key, f"1 to {MAX_KEY_LENGTH} characters"
        )
    if gas_limit is not None and gas_limit < 21_000:
        raise InvalidRequest("gas_limit", gas_limit, ">= 21000")
    if items is not None and items < 0:
        raise InvalidRequest("items", items, ">= 0")
    signer = checksum_address("signer", signer)
    to = checksum_address("to", to)
    try:
        tier = Tier(tier)
    except ValueError:
        raise InvalidRequest("tier", tier, "fast, standard or slow") from None
    existing = db.find_request(session=session, chain_id=chain_id, idempotency_key=idempotency_key)
    if existing is None:
        request = db.add_request(
            session=session,
            chain_id=chain_id,
            signer=signer,
            idempotency_key=idempotency_key,
            to_address=to,
            data=bytes(data),
            tier=tier.value,
            items=items,
            gas_limit=gas_limit,
            now=now or datetime.now(UTC),
        )
        if request is not None:
            return Submitted(request.id, request.idempotency_key, request.state, created=True)
        # Another transaction committed the same key between our read and our insert.
        existing = db.find_request(
            session=session, chain_id=chain_id, idempotency_key=idempotency_key
        )
        assert existing is not None, "the unique key was taken, so the row exists"
    for field, stored, given in (
        ("signer", existing.signer, signer),
        ("target", existing.to_address, to),
        ("calldata", existing.data, bytes(data)),
        ("tier", existing.tier, tier.value),
    ):
        if stored != given:
            raise IdempotencyConflict(idempotency_key, field)
    return Submitted(existing.id, existing.idempotency_key, existing.state, created=False)


def outcome(*, session: Session, chain_id: int, idempotency_key: str) -> RequestOutcome | None:
    """The request of a key, or None if it was never submitted."""
    request = db.find_request(session=session, chain_id=chain_id, idempotency_key=idempotency_key)
    return _outcome(request) if request is not None else None


def outcomes(
    *, session: Session, chain_id: int, states: tuple[RequestState, ...] | None = None
) -> list[RequestOutcome]:
    return [
        _outcome(r) for r in db.list_requests(session=session, chain_id=chain_id, states=states)
    ]


def replay_lost_blocks(
    *,
    sessions: sessionmaker[Session],
    chain_id: int,
    head_block: int,
    send_raw: Callable[[bytes], object],
) -> int:
    """Broadcast again, in their first order, the stored attempts the database holds as
    mined above `head_block`: a chain that lost blocks (an embedded anvil killed before it
    saved them) gets the very same signed transactions back, so the same nonces carry the
    same payloads and the same certificate ids come out. Nothing is signed. Returns how
    many were sent; the node's refusal of one propagates."""
    with sessions() as session:
        raws = db.mined_attempts_above(session=session, chain_id=chain_id, block=head_block)
    for raw in raws:
        send_raw(raw)
    return len(raws)


def send_once(sender: OutboxSender) -> SendReport:
    """One round of the sender: its report lists the requests that became final, with the
    transaction hash the chain kept (`report.finished`)."""
    return sender.send_once()


def run(sender: OutboxSender, stop: threading.Event) -> None:
    """The sender's loop until `stop` is set (the daemon's long-running job)."""
    sender.run(stop)
