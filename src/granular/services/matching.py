"""The daemon's matching claims (DESIGN.md §4 "Matching claims"; issue 9).

Guarantees:
- A window is matched only once all its certificates (both kinds, top-ups included) are
  confirmed and mirrored: no issuance item of the window is pending, and every certificate
  minted for it is in the mirror.
- Per reservation and pass, at most ONE claimBatch (at most `batch_size` entries), sent
  through the outbox signed by the issuer key, which must be an operator the reservation
  wallet approved (read from the mirror's operators). Without that approval nothing is
  sent and the reservation's matching status says `waiting_for_operator`.
- The batch's rows (one per window: entries, claimed Wh, the window's production,
  consumption and matched Wh) and its outbox request are added in one DB transaction, the
  request keyed by the (reservation, window, sequence) of its rows; the rows are unique on
  that triple. A crash before the commit sends nothing; after it, the outbox sends exactly
  that batch, and the next pass waits for it.
- A reservation with a batch in flight, or confirmed in a block the mirror has not reached,
  is not planned again (the mirror would still show the slices it claimed as Active).
  A batch that reverted or failed counts for nothing; its windows are planned again
  (sequence + 1) from what the mirror shows.
- Only Active slices the wallet holds are offered (domain.matching): a slice moved or
  claimed by hand is skipped, never reverted.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from fractions import Fraction

from eth_utils.address import to_checksum_address
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.registry import encode_claim_batch
from granular.adapters.db import matching as db
from granular.adapters.db import mirror as mirror_db
from granular.adapters.db.issuance import ISSUED, PENDING
from granular.adapters.db.lease import Lease, make_lease
from granular.domain import matching as rules
from granular.domain.gas import Tier
from granular.domain.outbox import RequestState
from granular.services import outbox

log = logging.getLogger("granular.matching")

PRODUCTION, CONSUMPTION = 0, 1  # the registry's Kind


class MatchingState(StrEnum):
    """The matching status of a reservation after a pass (stored as its value)."""

    WAITING_FOR_OPERATOR = "waiting_for_operator"  # the issuer is not the wallet's operator
    CLAIMING = "claiming"  # a claimBatch is in flight or not yet mirrored
    UP_TO_DATE = "up_to_date"  # every ready window is matched as far as its slices allow
    WAITING_FOR_CERTIFICATES = "waiting_for_certificates"  # a window not yet all confirmed


@dataclass(frozen=True, slots=True)
class MatchingContext:
    chain_id: int
    registry: str
    issuer: str  # the outbox signer; claims as the buyer wallet's operator
    batch_size: int = 200
    tier: Tier = Tier.STANDARD


@dataclass(frozen=True, slots=True)
class MatchReport:
    reservations: int = 0
    claims_submitted: int = 0  # claimBatch entries sent this pass
    matched_wh: int = 0
    waiting_for_operator: int = 0


@dataclass(frozen=True, slots=True)
class _Window:
    start: datetime
    production_wh: int
    consumption_wh: int
    certificate_ids: tuple[int, ...]
    ready: bool


def _windows(items: Sequence[db.WindowItem], mirrored: set[int]) -> list[_Window]:
    by_window: dict[datetime, list[db.WindowItem]] = defaultdict(list)
    for item in items:
        by_window[item.window_start].append(item)
    windows = []
    for start, group in sorted(by_window.items()):
        issued = [i for i in group if i.state == ISSUED and i.certificate_id is not None]
        ready = not any(i.state == PENDING for i in group) and all(
            i.certificate_id in mirrored for i in issued
        )
        windows.append(
            _Window(
                start,
                sum(i.quantity_wh for i in issued if i.kind == "production"),
                sum(i.quantity_wh for i in issued if i.kind == "consumption"),
                tuple(i.certificate_id for i in issued if i.certificate_id is not None),
                ready,
            )
        )
    return windows


def batch_key(chain_id: int, reservation_id: int, windows: Sequence[tuple[datetime, int]]) -> str:
    """The outbox key of a claimBatch: derived from the (window, sequence) of its rows."""
    text = ";".join(f"{start.isoformat()}#{sequence}" for start, sequence in sorted(windows))
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    return f"matching:{chain_id}:{reservation_id}:{digest}"


def settle(*, session: Session, context: MatchingContext, now: datetime) -> None:
    """Sent batches whose outbox request is final become confirmed or failed."""
    for key in sorted(db.sent_keys(session=session, chain_id=context.chain_id)):
        found = outbox.outcome(session=session, chain_id=context.chain_id, idempotency_key=key)
        if found is None or not found.final:
            continue
        state = db.CONFIRMED if found.state == RequestState.CONFIRMED else db.FAILED
        db.settle_claims(
            session=session,
            idempotency_key=key,
            state=state,
            tx_hash=found.tx_hash,
            block_number=found.block_number,
            now=now,
        )
        if state == db.FAILED:
            log.warning(
                '{"event": "matching_batch_failed", "idempotency_key": "%s", "error": "%s"}',
                key,
                found.error_code,
            )


def matching_lease(engine: Engine, chain_id: int, *, ttl_s: float = 60.0) -> Lease:
    """The lease only whose holder matches ("matching:<chain id>"): replicas on one
    PostgreSQL take turns instead of colliding on the (reservation, window, sequence) key."""
    return make_lease(engine, f"matching:{chain_id}", ttl_s=ttl_s, clock=time.time)


def claim(
    *,
    sessions: sessionmaker[Session],
    context: MatchingContext,
    now: datetime,
    lease: Lease | None = None,
) -> MatchReport:
    """One matching pass over every reservation with consumption certificates; with
    `lease`, nothing unless this process holds it."""
    if lease is not None and not lease.acquire():
        return MatchReport()
    with sessions.begin() as session:
        settle(session=session, context=context, now=now)
        reservations = db.reservations_with_consumption(session=session)
    submitted = matched = waiting = 0
    for reservation_id, wallet in reservations:
        with sessions.begin() as session:
            entries, wh, state = _claim_reservation(
                session, context, reservation_id, to_checksum_address(wallet), now
            )
            db.set_status(
                session=session,
                reservation_id=reservation_id,
                state=state.value,  # a plain str: a driver may store an Enum by its name
                detail=_DETAILS.get(state),
                now=now,
            )
        submitted += entries
        matched += wh
        waiting += state == MatchingState.WAITING_FOR_OPERATOR
    return MatchReport(len(reservations), submitted, matched, waiting)


_DETAILS = {
    MatchingState.WAITING_FOR_OPERATOR: (
        "the reservation wallet has not approved the issuer as its operator "
        "(setOperator, e.g. POST /interface/registry/v1/wallets/{wallet}/operators); "
        "nothing is claimed until it does"
    ),
    MatchingState.CLAIMING: "a claimBatch is on its way; the next pass goes on once it is mirrored",
}


def _claim_reservation(
    session: Session,
    context: MatchingContext,
    reservation_id: int,
    wallet: str,
    now: datetime,
) -> tuple[int, int, MatchingState]:
    records = db.claims_of(session=session, reservation_id=reservation_id)
    if any(r.state == db.SENT for r in records):
        return 0, 0, MatchingState.CLAIMING
    mirror_at = db.mirror_block(session=session, chain_id=context.chain_id)
    if any(
        r.state == db.CONFIRMED
        and r.block_number is not None
        and (mirror_at is None or r.block_number > mirror_at)
        for r in records
    ):
        return 0, 0, MatchingState.CLAIMING
    if not mirror_db.is_operator(session=session, wallet=wallet, operator=context.issuer):
        return 0, 0, MatchingState.WAITING_FOR_OPERATOR
    items = db.window_items(
        session=session, reservation_id=reservation_id, chain_id=context.chain_id
    )
    certificate_ids = {i.certificate_id for i in items if i.certificate_id is not None}
    mirrored = db.mirrored_certificates(session=session, certificate_ids=certificate_ids)
    windows = _windows(items, mirrored)
    matched: dict[datetime, int] = defaultdict(int)
    sequence: dict[datetime, int] = defaultdict(int)
    for r in records:
        sequence[r.window_start] = max(sequence[r.window_start], r.sequence)
        if r.state != db.FAILED:
            matched[r.window_start] += r.claimed_wh
    wanted = [
        w
        for w in windows
        if w.ready
        and rules.still_needed_wh(
            rules.WindowState(w.start, w.production_wh, w.consumption_wh, matched[w.start])
        )
        > 0
    ]
    if not wanted:
        waiting = any(not w.ready for w in windows)
        return 0, 0, MatchingState.WAITING_FOR_CERTIFICATES if waiting else MatchingState.UP_TO_DATE
    slices = db.active_slices(
        session=session,
        owner=wallet,
        certificate_ids=[c for w in wanted for c in w.certificate_ids],
    )
    by_certificate: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)
    for row in slices:
        by_certificate[row[1]].append(row)
    states = []
    for w in wanted:
        held = [row for c in w.certificate_ids for row in by_certificate.get(c, [])]
        states.append(
            rules.WindowState(
                w.start,
                w.production_wh,
                w.consumption_wh,
                matched[w.start],
                production=[rules.Available(s, c, q) for s, c, k, q in held if k == PRODUCTION],
                consumption=[rules.Available(s, c, q) for s, c, k, q in held if k == CONSUMPTION],
            )
        )
    plans = rules.plan(states, context.batch_size)
    if not plans:
        return 0, 0, MatchingState.UP_TO_DATE
    by_start = {w.start: w for w in wanted}
    new = [
        db.NewClaim(
            reservation_id=reservation_id,
            window_start=p.window_start,
            sequence=sequence[p.window_start] + 1,
            entries=[
                [e.production_slice_id, e.consumption_slice_id, e.quantity_wh] for e in p.entries
            ],
            claimed_wh=p.claimed_wh,
            production_wh=by_start[p.window_start].production_wh,
            consumption_wh=by_start[p.window_start].consumption_wh,
            matched_wh=matched[p.window_start] + p.claimed_wh,
        )
        for p in plans
    ]
    key = batch_key(context.chain_id, reservation_id, [(c.window_start, c.sequence) for c in new])
    entries = [(e[0], e[1], e[2]) for c in new for e in c.entries]
    outbox.submit(
        session=session,
        chain_id=context.chain_id,
        signer=context.issuer,
        idempotency_key=key,
        to=context.registry,
        data=encode_claim_batch(entries),
        tier=context.tier,
        items=len(entries),
        now=now,
    )
    db.add_claims(
        session=session, chain_id=context.chain_id, idempotency_key=key, claims=new, now=now
    )
    claimed = sum(c.claimed_wh for c in new)
    log.info(
        '{"event": "matching_batch", "reservationId": %d, "windows": %d, "claims": %d, '
        '"matchedWh": %d, "idempotency_key": "%s"}',
        reservation_id,
        len(new),
        len(entries),
        claimed,
        key,
    )
    return len(entries), claimed, MatchingState.CLAIMING


# --- what a reservation shows ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MatchingStatus:
    """A reservation's matching: the last pass's state and when it changed, and the Wh
    over the reservation's windows."""

    state: MatchingState
    detail: str | None
    updated_at: datetime
    claimed_wh: int
    consumed_wh: int
    produced_wh: int
    deficit_wh: int  # consumption no production was claimed against
    surplus_wh: int  # production left unclaimed
    score: str | None  # claimed / consumed, decimal text; None without consumption


def status_of(*, sessions: sessionmaker[Session], reservation_id: int) -> MatchingStatus | None:
    """The `matching` field of GET /reservations/{id}: the last pass's state, the claimed
    and consumed Wh over the reservation's windows and the score (None: no matching)."""
    with sessions() as session:
        status = db.get_status(session=session, reservation_id=reservation_id)
        if status is None:
            return None
        totals = db.window_totals(session=session, reservation_id=reservation_id)
    state, detail, updated_at = status
    claimed = sum(t.claimed_wh for t in totals)
    consumed = sum(t.consumption_wh for t in totals)
    return MatchingStatus(
        state=MatchingState(state),
        detail=detail,
        updated_at=updated_at,
        claimed_wh=claimed,
        consumed_wh=consumed,
        produced_wh=sum(t.production_wh for t in totals),
        deficit_wh=sum(rules.deficit_wh(t.consumption_wh, t.claimed_wh) for t in totals),
        surplus_wh=sum(rules.surplus_wh(t.production_wh, t.claimed_wh) for t in totals),
        score=score_text(rules.score(claimed, consumed)),
    )


def score_text(value: Fraction | None) -> str | None:
    """A score as a decimal string with 4 places, truncated (never rounded up to 1)."""
    if value is None:
        return None
    scaled = value.numerator * 10_000 // value.denominator
    return f"{scaled // 10_000}.{scaled % 10_000:04d}"
