"""Issuance: meter reads in the database to certificates on chain, exactly once (issue 7 §3).

Guarantees:
- An issuance item is unique on (reservation, device, window start, sequence); a batch's
  items, their headers and the outbox request that mints them are written in ONE database
  transaction, and the batch's `batchId` (keccak256 of its sorted item keys) is minted at
  most once by the registry. A crash anywhere leaves either nothing or all of a batch, and
  the next pass plans only what is not yet accounted for: nothing is minted twice.
- `plan` is idempotent: what is accounted for a (reservation, device, window) is never
  planned again; late reads become top-ups (sequence + 1). The rules are
  `granular.domain.issuance` (pure).
- `settle` records a confirmed batch's certificates (ids from the receipt's events, checked
  against each item's owner, quantity and data hash) in one transaction, and logs one
  `certificate_issued` JSON line per certificate after it commits. A reverted batch is
  bisected: two halves with new batch ids and keys, until a single failing item is marked
  reverted with the decoded reason.
- A reservation's target counts production issued or in flight, never reverted volume:
  the next `plan` takes a reverted item's volume up again in its own window (sequence + 1,
  with any late read; the reverted item becomes retried, counted nowhere), so every Wh
  read is planned once and the buyer is not left short. The reservation reaches its
  target, warns the buyer and (without authority to exceed) completes in `settle`, when
  the production confirmed on chain reaches the target; see `granular.domain.issuance`.
- Only the holder of the lease "issuance:<chain id>" plans (pass `lease=` to `plan`, made by
  `planner_lease`): several daemons on one PostgreSQL plan one at a time. The unique item
  key is the last line of defence: a batch whose items exist already is rolled back.
- Volumes: a reservation's issued, failed and leftover Wh are recomputed from its items.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.registry import (
    KIND_CODES,
    IssuanceCall,
    RegistryReader,
    decode_issuance,
    encode_issue_batch,
)
from granular.adapters.db import issuance as db
from granular.adapters.db.headers import get_headers, put_headers
from granular.adapters.db.lease import Lease, make_lease
from granular.adapters.db.outbox import RequestState
from granular.adapters.db.reservations import (
    StoredReservation,
    get_reservation,
    release_devices,
)
from granular.domain.devices import DeviceKind
from granular.domain.energy import EnergyInterval, MaxEnergyPolicy
from granular.domain.gas import Tier
from granular.domain.headers import canonical_json, data_hash_hex
from granular.domain.issuance import (
    Accounted,
    Capacity,
    DeviceFacts,
    DeviceWindow,
    ItemKey,
    ItemOutcome,
    PlannedItem,
    TargetState,
    batch_id,
    build_header,
    chunks,
    due_for_retry,
    halves,
    idempotency_key,
    max_batch_items,
    plan_reservation,
    settle_target,
)
from granular.domain.units import to_utc
from granular.domain.windows import Frequency, split_at, split_interval, window_containing
from granular.errors import GranularError, NotFound
from granular.services import outbox
from granular.services.reservations import covered_until_of, status_of

LOGGER_NAME = "granular.issuance"
_log = logging.getLogger(LOGGER_NAME)

__all__ = [
    "CertificateNotFound",
    "IssuanceContext",
    "PassReport",
    "Verification",
    "advance_reservations",
    "plan",
    "planner_lease",
    "settle",
    "show_certificate",
    "verify_certificate",
]


class CertificateNotFound(NotFound):
    code = "certificate_not_found"

    def __init__(self, chain_id: int, certificate_id: int) -> None:
        super().__init__(
            f"certificate {certificate_id} was not issued by this issuer on chain {chain_id}",
            {"field": "certificate_id", "value": certificate_id, "chain_id": chain_id},
        )


class CertificateMismatch(GranularError):
    """A confirmed batch's events do not say what its items say: never recorded."""

    code = "certificate_mismatch"

    def __init__(self, batch: str, reason: str) -> None:
        super().__init__(f"batch {batch}: {reason}", {"batch_id": batch, "reason": reason})


@dataclass(frozen=True, slots=True)
class IssuanceContext:
    chain_id: int
    registry: str  # checksum address of the CertificateRegistry
    issuer: str  # checksum address of the issuer key (holds ISSUER_ROLE)
    rpc_url: str  # to read receipts / events (never logged unredacted)
    registry_name: str = "granular"  # the header's `registry` field
    grace_s: int = 300  # a window is due at window end + grace
    batch_size: int = 100  # items per issueBatch transaction (fits the gas cap)
    max_energy_policy: MaxEnergyPolicy = field(default_factory=MaxEnergyPolicy)
    gas_cap: int = 16_777_216  # per-transaction gas cap the batch size is held under
    items_per_commit: int = 1_000  # batches written per DB transaction (whole batches)
    retry_initial_s: int = 60  # a reverted item's volume is planned again after this,
    retry_max_s: int = 86_400  # doubling with each revert of its window, at most this


@dataclass(frozen=True, slots=True)
class PassReport:
    items_planned: int = 0  # new issuance items written this pass
    batches_submitted: int = 0  # outbox requests added
    certificates_issued: int = 0  # certificates recorded as confirmed this pass
    items_failed: int = 0
    warnings: tuple[str, ...] = ()  # e.g. "window ... of device ... has no data"


@dataclass(frozen=True, slots=True)
class Verification:
    certificate_id: int
    data_hash_stored: str | None
    data_hash_recomputed: str | None
    data_hash_on_chain: str | None
    tx_hash: str | None
    ok: bool
    reason: str | None


def planner_lease(engine: Engine, chain_id: int, *, ttl_s: float = 60.0) -> Lease:
    """The lease only whose holder plans ("issuance:<chain id>"): an advisory lock on
    PostgreSQL, a lease row on SQLite."""
    return make_lease(engine, f"issuance:{chain_id}", ttl_s=ttl_s, clock=time.time)


# --- planning -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mint:
    tier: str
    item: db.NewItem
    key: ItemKey
    canonical: bytes


@dataclass
class _Planned:
    reservation_id: int
    others: list[db.NewItem]  # failed and leftover items, written with the finalisation
    considered: datetime | None
    retried: list[int]  # reverted items whose volume this plan took up again
    warnings: list[str]


def _due_windows(
    reservation: StoredReservation,
    intervals: Sequence[db.IntervalRecord],
    kinds: dict[int, DeviceKind],
    until: dict[int, datetime],
    due_by: datetime,
    considered: datetime | None = None,
) -> list[DeviceWindow]:
    """Each device's due windows (period end <= due_by) with the energy known in them.
    A window without data that an earlier pass considered is left out (nothing to do, and
    it was warned about then)."""
    frequency = Frequency(reservation.frequency)
    energy: dict[tuple[int, datetime], int] = defaultdict(int)
    ids: dict[tuple[int, datetime], list[int]] = defaultdict(list)
    subs: dict[tuple[int, datetime], set[int]] = defaultdict(set)
    for record in intervals:
        end = until.get(record.device_id)
        if end is None:
            continue
        interval = EnergyInterval(str(record.device_id), record.start, record.end, record.energy_wh)
        pieces = [interval]
        if record.start < reservation.start or record.end > end:
            pieces = [
                p
                for p in split_at(interval, (reservation.start, end))
                if reservation.start <= p.start and p.end <= end
            ]
        for piece in pieces:
            window = window_containing(frequency, piece.start)
            parts = (
                [(window.start, piece.energy_wh)]
                if piece.end <= window.end
                else [
                    (p.window.start, p.interval.energy_wh) for p in split_interval(piece, frequency)
                ]
            )
            for start, wh in parts:
                key = (record.device_id, start)
                energy[key] += wh
                if not ids[key] or ids[key][-1] != record.id:
                    ids[key].append(record.id)
                subs[key].add(record.submission_id)
    found: list[DeviceWindow] = []
    horizon = max(until.values(), default=reservation.start)
    window = window_containing(frequency, reservation.start)
    while window.start < horizon and window.start < due_by:
        for device_id, end in until.items():
            period_start = max(window.start, reservation.start)
            period_end = min(window.end, end)
            if period_start >= period_end or period_end > due_by:
                continue
            key = (device_id, window.start)
            if key not in energy and considered is not None and period_end <= considered:
                continue
            found.append(
                DeviceWindow(
                    device_id=device_id,
                    kind=kinds[device_id],
                    window_start=window.start,
                    period_start=period_start,
                    period_end=period_end,
                    energy_wh=energy.get(key, 0),
                    interval_ids=tuple(ids.get(key, ())),
                    submission_ids=tuple(sorted(subs.get(key, ()))),
                )
            )
        window = window.next()
    return found


def _plan_one(
    session: Session, context: IssuanceContext, reservation_id: int, now: datetime
) -> tuple[_Planned, list[_Mint]] | None:
    reservation = get_reservation(session=session, reservation_id=reservation_id)
    if reservation is None:
        return None
    until = {d: u for d, u in covered_until_of(reservation).items() if u > reservation.start}
    if not until:
        return None
    horizon = max(until.values())
    considered = db.considered_until(session=session, reservation_id=reservation_id)
    reached_at = db.target_reached_at(session=session, reservation_id=reservation_id)
    if reached_at is not None and not reservation.authority_to_exceed:
        return None  # completed by its confirmed target: the rest is leftover
    reverted = db.reverted_items(session=session, reservation_id=reservation_id)
    if considered is not None and considered >= horizon and not reverted:
        return None  # every window was considered after the reservation's end
    # Only these reverted items are taken up again (then marked retried); any other
    # reverted item, even one reverted since the line above, is held like one in flight.
    retrying = due_for_retry(
        reverted, now, initial_s=context.retry_initial_s, max_s=context.retry_max_s
    )
    due_by = now - timedelta(seconds=context.grace_s)
    revisions = db.revisions_in_force(session=session, device_ids=list(until), at=now)
    until = {d: u for d, u in until.items() if d in revisions}
    kinds = {d: DeviceKind(r.kind) for d, r in revisions.items()}
    intervals = db.intervals_between(
        session=session, device_ids=list(until), start=reservation.start, end=min(horizon, due_by)
    )
    windows = _due_windows(reservation, intervals, kinds, until, due_by, considered)
    if not windows:
        return None
    accounted = {
        k: Accounted(total, seq)
        for k, (total, seq) in db.accounted(
            session=session, reservation_id=reservation_id, retrying=retrying
        ).items()
    }
    counted = db.counted_production_wh(
        session=session, reservation_id=reservation_id, retrying=retrying
    )
    target = TargetState(
        reservation_id=reservation.id,
        target_volume_wh=reservation.target_volume_wh,
        authority_to_exceed=reservation.authority_to_exceed,
        counted_wh=counted,
    )
    capacities = {d: Capacity(r.id, r.capacity_w) for d, r in revisions.items()}
    result = plan_reservation(target, windows, accounted, capacities)
    status = status_of(reservation, now).value
    warnings = [
        f"reservation {reservation.id}: window {w.period_start.isoformat()}.."
        f"{w.period_end.isoformat()} of device {w.device_id} has no data"
        for w in result.empty_windows
        if considered is None or w.period_end > considered
    ]
    mints: list[_Mint] = []
    others: list[db.NewItem] = []
    frequency = reservation.frequency
    for planned in result.items:
        revision = revisions[planned.key.device_id]
        provenance = _provenance(planned, reservation, status, frequency, revision)
        if planned.outcome is ItemOutcome.MINT:
            facts = DeviceFacts(
                device_id=revision.device_id,
                organization_id=revision.organization_id,
                external_id=revision.external_id,
                country_code=revision.country_code,
                fuel_code=revision.fuel_code,
                device_type_code=revision.device_type_code,
                project_name=revision.project_name,
                latitude=revision.latitude,
                longitude=revision.longitude,
            )
            header = build_header(
                item=planned,
                device=facts,
                registry=context.registry_name,
                wallet=reservation.wallet,
                issued=now,
            )
            canonical = canonical_json(header)
            mints.append(
                _Mint(
                    reservation.gas_tier,
                    _new_item(
                        planned,
                        reservation.wallet,
                        db.PENDING,
                        data_hash_hex(canonical),
                        provenance,
                    ),
                    planned.key,
                    canonical,
                )
            )
        else:
            state = db.FAILED if planned.outcome is ItemOutcome.FAILED else db.LEFTOVER
            others.append(_new_item(planned, reservation.wallet, state, None, provenance))
    latest = max((w.period_end for w in windows), default=None)
    return (
        _Planned(reservation.id, others, latest, list(retrying), warnings),
        mints,
    )


def _provenance(
    item: PlannedItem,
    reservation: StoredReservation,
    status: str,
    frequency: str,
    revision: db.RevisionRecord,
) -> dict[str, Any]:
    return {
        "intervals": list(item.interval_ids),
        "submissions": list(item.submission_ids),
        "deviceRevisionId": revision.id,
        "deviceRevision": revision.revision,
        "maxEnergy": item.rule,
        "window": {
            "frequency": frequency,
            "start": item.key.window_start.isoformat(),
            "periodStart": item.period_start.isoformat(),
            "periodEnd": item.period_end.isoformat(),
        },
        "reservation": {
            "id": reservation.id,
            "status": status,
            "targetVolumeWh": reservation.target_volume_wh,
            "authorityToExceed": reservation.authority_to_exceed,
            "countedBeforeWh": item.counted_before_wh,
            "wallet": reservation.wallet,
        },
        "outcome": item.outcome.value,
        "reason": item.reason,
    }


def _new_item(
    item: PlannedItem, wallet: str, state: str, data_hash: str | None, provenance: dict[str, Any]
) -> db.NewItem:
    return db.NewItem(
        reservation_id=item.key.reservation_id,
        device_id=item.key.device_id,
        window_start=item.key.window_start,
        sequence=item.key.sequence,
        period_start=item.period_start,
        period_end=item.period_end,
        kind=item.kind.value,
        quantity_wh=item.quantity_wh,
        owner=wallet,
        state=state,
        data_hash=data_hash,
        failure_code="max_energy_physical" if item.outcome is ItemOutcome.FAILED else None,
        failure_detail=item.reason if item.outcome is not ItemOutcome.MINT else None,
        provenance=provenance,
    )


class _AlreadyPlanned(Exception):
    """Rolls a batch's transaction back: its items or its key exist already."""


def _submit_batch(
    session: Session,
    context: IssuanceContext,
    tier: str,
    items: Sequence[tuple[ItemKey, db.NewItem | db.ItemRecord]],
    now: datetime,
    parent_id: int | None = None,
) -> int:
    """One issueBatch for `items` (in this order): batch row and outbox request, in the
    caller's transaction. Returns the batch row id."""
    the_id = batch_id(key for key, _ in items)
    key = idempotency_key(the_id)
    calls = [
        IssuanceCall(
            owner=item.owner,
            kind=KIND_CODES[item.kind],
            quantity_wh=item.quantity_wh,
            data_hash=bytes.fromhex((item.data_hash or "").removeprefix("0x")),
        )
        for _, item in items
    ]
    submitted = outbox.submit(
        session=session,
        chain_id=context.chain_id,
        signer=context.issuer,
        idempotency_key=key,
        to=context.registry,
        data=encode_issue_batch(the_id, calls),
        tier=Tier(tier),
        items=len(items),
        now=now,
    )
    if not submitted.created:
        raise _AlreadyPlanned(key)
    return db.add_batch(
        session=session,
        chain_id=context.chain_id,
        batch_id="0x" + the_id.hex(),
        idempotency_key=key,
        tier=tier,
        item_count=len(items),
        parent_id=parent_id,
        now=now,
    )


def _write_batches(
    sessions: sessionmaker[Session],
    context: IssuanceContext,
    groups: Sequence[Sequence[_Mint]],
    now: datetime,
) -> None:
    """Each group is one batch: its outbox request, batch row, items, provenance and
    headers, all in ONE transaction (several batches may share it)."""
    with sessions.begin() as session:
        for group in groups:
            batch_row = _submit_batch(
                session, context, group[0].tier, [(m.key, m.item) for m in group], now
            )
            db.add_items(
                session=session, items=[m.item for m in group], batch_row_id=batch_row, now=now
            )
            put_headers(
                session=session,
                headers=[(m.item.data_hash or "", m.canonical) for m in group],
                now=now,
            )


def plan(
    *,
    sessions: sessionmaker[Session],
    context: IssuanceContext,
    now: datetime,
    frequencies: Collection[Frequency] | None = None,
    progress: Callable[[int, int], None] | None = None,
    lease: Lease | None = None,
) -> PassReport:
    """Due windows of live reservations (and every earlier window again, for late reads)
    -> issuance items, headers and outbox requests, each batch in one DB transaction.
    Idempotent: a second call with nothing new plans nothing. With `lease`, nothing is
    planned unless this process holds it."""
    now = to_utc(now, field="now")
    if lease is not None and not lease.acquire():
        return PassReport(warnings=("issuance lease held by another planner",))
    names = None if frequencies is None else [Frequency(f).value for f in frequencies]
    with sessions() as session:
        reservation_ids = db.reservations_to_plan(session=session, now=now, frequencies=names)
    planned: list[_Planned] = []
    mints: list[_Mint] = []
    skipped: list[str] = []
    for reservation_id in reservation_ids:
        try:
            with sessions() as session:
                found = _plan_one(session, context, reservation_id, now)
        except GranularError as error:  # one reservation's fault never blocks the others
            skipped.append(f"reservation {reservation_id}: not planned: {error}")
            continue
        if found is not None:
            planned.append(found[0])
            mints.extend(found[1])
    size = max(1, min(context.batch_size, max_batch_items(context.gas_cap)))
    by_tier: dict[str, list[_Mint]] = defaultdict(list)
    for mint in mints:
        by_tier[mint.tier].append(mint)
    groups = [chunk for tier in sorted(by_tier) for chunk in chunks(by_tier[tier], size)]
    items_planned = batches = 0
    per_commit = max(1, context.items_per_commit // size)
    for first in range(0, len(groups), per_commit):
        together = groups[first : first + per_commit]
        try:
            _write_batches(sessions, context, together, now)
            written = together
        except (_AlreadyPlanned, IntegrityError):
            # Some were planned already (another planner without the lease): one by one.
            written = []
            for group in together:
                try:
                    _write_batches(sessions, context, [group], now)
                    written.append(group)
                except (_AlreadyPlanned, IntegrityError):
                    _log.warning(
                        json.dumps({"event": "batch_already_planned", "items": len(group)})
                    )
        items_planned += sum(len(group) for group in written)
        batches += len(written)
        if progress is not None:
            progress(first + len(together), len(groups))
    failed = 0
    warnings: list[str] = list(skipped)
    for result in planned:
        warnings.extend(result.warnings)
        try:
            with sessions.begin() as session:
                db.add_items(session=session, items=result.others, batch_row_id=None, now=now)
                db.set_reservation_state(
                    session=session,
                    reservation_id=result.reservation_id,
                    considered=result.considered,
                    target_reached=None,  # set by `settle`, on confirmed volume
                    now=now,
                )
                db.mark_retried(session=session, item_ids=result.retried, now=now)
                db.refresh_volumes(
                    session=session, reservation_ids=[result.reservation_id], now=now
                )
        except IntegrityError:
            continue
        items_planned += len(result.others)
        failed += sum(1 for item in result.others if item.state == db.FAILED)
    for warning in warnings:
        _log.warning(json.dumps({"event": "issuance_warning", "message": warning}))
    return PassReport(
        items_planned=items_planned,
        batches_submitted=batches,
        items_failed=failed,
        warnings=tuple(warnings),
    )


# --- settlement ---------------------------------------------------------------------------


def _item_key(item: db.ItemRecord) -> ItemKey:
    return ItemKey(item.reservation_id, item.device_id, item.window_start, item.sequence)


def settle(
    *, sessions: sessionmaker[Session], context: IssuanceContext, now: datetime
) -> PassReport:
    """Outbox requests of issuance batches that became final -> certificates recorded
    (on-chain id from the receipt's events, tx hash), one `certificate_issued` JSON log line
    each, reservation volumes updated; a reverted batch is bisected (halves re-submitted)
    until the failing item is isolated and marked reverted with the decoded reason (the
    next plan takes its volume up again). A reservation whose confirmed production reaches
    its target is told so (a warning) and, without authority to exceed, completes.
    Idempotent."""
    now = to_utc(now, field="now")
    with sessions() as session:
        pending = db.pending_batches(session=session, chain_id=context.chain_id)
        # The requests not yet final, in one query; only the others are looked up one by
        # one, so each batch's outcome is read about once in its life, not every pass.
        unfinished = {
            o.idempotency_key
            for o in outbox.outcomes(session=session, chain_id=context.chain_id, states=_NOT_FINAL)
        }
        outcomes = {
            b.id: outbox.outcome(
                session=session, chain_id=context.chain_id, idempotency_key=b.idempotency_key
            )
            for b in pending
            if b.idempotency_key not in unfinished
        }
    confirmed = [
        b
        for b in pending
        if (o := outcomes.get(b.id)) is not None and o.state is RequestState.CONFIRMED
    ]
    reverted = [
        b
        for b in pending
        if (o := outcomes.get(b.id)) is not None
        and o.state in (RequestState.REVERTED, RequestState.FAILED)
    ]
    issued = failed = 0
    submitted = 0
    touched: set[int] = set()
    warnings: list[str] = []
    if confirmed:
        reader = RegistryReader(context.rpc_url, context.registry)
        receipts = reader.receipts([outcomes[b.id].tx_hash or "" for b in confirmed])  # type: ignore[union-attr]
        for batch in confirmed:
            outcome = outcomes[batch.id]
            assert outcome is not None and outcome.tx_hash is not None
            receipt = receipts.get(outcome.tx_hash)
            if receipt is None:
                continue  # the node lost it (a reorg): the outbox will tell again
            try:
                lines = _record_batch(
                    sessions, context, batch, receipt, outcome.tx_hash, now, warnings
                )
            except CertificateMismatch as error:  # stays pending, and says so every pass
                _log.error(json.dumps({"event": "certificate_mismatch", "detail": str(error)}))
                continue
            touched.update(line["reservationId"] for line in lines)
            issued += len(lines)
            for line in lines:
                _log.info(json.dumps(line, sort_keys=True))
    for batch in reverted:
        outcome = outcomes[batch.id]
        assert outcome is not None
        code = outcome.error_code or "reverted"
        detail = outcome.error_detail or "reverted"
        if code == ALREADY_ISSUED:
            # This very batch is on chain already (a database restored from a backup, say):
            # record what the chain holds; bisecting would mint its items a second time.
            issued += _recover_issued_batch(sessions, context, batch, now, touched, warnings)
            continue
        with sessions.begin() as session:
            items = db.batch_items(session=session, batch_row_id=batch.id)
            if len(items) <= 1:
                if not db.close_batch(
                    session=session,
                    batch_row_id=batch.id,
                    state=db.FAILED,
                    tx_hash=outcome.tx_hash,
                    block_number=outcome.block_number,
                    error_code=code,
                    error_detail=detail,
                    now=now,
                ):
                    continue
                db.fail_items(
                    session=session,
                    item_ids=[i.id for i in items],
                    state=db.REVERTED,
                    code=code,
                    detail=detail,
                    now=now,
                )
                db.refresh_volumes(
                    session=session, reservation_ids=[i.reservation_id for i in items], now=now
                )
                failed += len(items)
                _log.warning(
                    json.dumps(
                        {
                            "event": "issuance_item_reverted",
                            "batchId": batch.batch_id,
                            "items": [i.id for i in items],
                            "reason": code,
                            "detail": detail,
                        }
                    )
                )
                continue
            if not db.close_batch(
                session=session,
                batch_row_id=batch.id,
                state=db.SPLIT,
                tx_hash=outcome.tx_hash,
                block_number=outcome.block_number,
                error_code=code,
                error_detail=detail,
                now=now,
            ):
                continue
            for half in halves(items):
                child = _submit_batch(
                    session,
                    context,
                    batch.tier,
                    [(_item_key(i), i) for i in half],
                    now,
                    parent_id=batch.id,
                )
                db.move_items(
                    session=session, item_ids=[i.id for i in half], batch_row_id=child, now=now
                )
                submitted += 1
        _log.warning(
            json.dumps(
                {
                    "event": "issuance_batch_bisected",
                    "batchId": batch.batch_id,
                    "items": len(items),
                    "reason": code,
                }
            )
        )
    if touched:
        with sessions.begin() as session:  # a recount: idempotent, once per pass
            db.refresh_volumes(session=session, reservation_ids=touched, now=now)
    for warning in warnings:
        _log.warning(json.dumps({"event": "issuance_warning", "message": warning}))
    return PassReport(
        batches_submitted=submitted,
        certificates_issued=issued,
        items_failed=failed,
        warnings=tuple(warnings),
    )


def _settle_targets(session: Session, reservation_ids: Collection[int], now: datetime) -> list[str]:
    """Reservations whose production confirmed on chain reached the target now: recorded,
    completed without authority to exceed, in the caller's transaction (the one that
    records the confirmation, so a crash cannot lose the moment); the buyer's warning for
    each, to log once it commits."""
    warnings: list[str] = []
    for progress in db.target_progress(session=session, reservation_ids=reservation_ids):
        outcome = settle_target(
            target_volume_wh=progress.target_volume_wh,
            authority_to_exceed=progress.authority_to_exceed,
            settled_wh=progress.settled_wh,
            reached_before=progress.reached_at is not None,
        )
        if not outcome.reached:
            continue
        db.set_reservation_state(
            session=session,
            reservation_id=progress.reservation_id,
            considered=None,
            target_reached=now,
            now=now,
        )
        if outcome.completes:
            db.complete_reservation(
                session=session, reservation_id=progress.reservation_id, now=now
            )
        warnings.append(
            f"reservation {progress.reservation_id}: target of {progress.target_volume_wh} Wh "
            f"reached ({progress.settled_wh} Wh confirmed on chain)"
            + ("; the reservation completes" if outcome.completes else "")
        )
    return warnings


ALREADY_ISSUED = "CertificateRegistryBatchAlreadyIssued"
_NOT_FINAL = (RequestState.QUEUED, RequestState.SIGNED, RequestState.SENT, RequestState.MINED)


def _recover_issued_batch(
    sessions: sessionmaker[Session],
    context: IssuanceContext,
    batch: db.BatchRecord,
    now: datetime,
    touched: set[int],
    warnings: list[str],
) -> int:
    """Record the certificates of a batch the registry says it issued before, from its
    BatchIssued event; a batch whose events differ from its items is failed, never split."""
    reader = RegistryReader(context.rpc_url, context.registry)
    tx_hash = reader.batch_transaction(batch.batch_id)
    receipt = reader.receipts([tx_hash])[tx_hash] if tx_hash is not None else None
    reason = "the registry reports this batch issued, but no BatchIssued event was found"
    if receipt is not None and tx_hash is not None:
        try:
            lines = _record_batch(sessions, context, batch, receipt, tx_hash, now, warnings)
        except CertificateMismatch as error:
            reason = str(error)
        else:
            for line in lines:
                _log.info(json.dumps(line, sort_keys=True))
            touched.update(line["reservationId"] for line in lines)
            return len(lines)
    with sessions.begin() as session:
        items = db.batch_items(session=session, batch_row_id=batch.id)
        if db.close_batch(
            session=session,
            batch_row_id=batch.id,
            state=db.FAILED,
            tx_hash=tx_hash,
            block_number=None,
            error_code=ALREADY_ISSUED,
            error_detail=reason,
            now=now,
        ):
            db.fail_items(  # final: something is on chain under this batch id
                session=session,
                item_ids=[i.id for i in items],
                state=db.FAILED,
                code=ALREADY_ISSUED,
                detail=reason,
                now=now,
            )
            touched.update(i.reservation_id for i in items)
    _log.error(
        json.dumps({"event": "batch_already_issued", "batchId": batch.batch_id, "detail": reason})
    )
    return 0


def _record_batch(
    sessions: sessionmaker[Session],
    context: IssuanceContext,
    batch: db.BatchRecord,
    receipt: Any,
    tx_hash: str,
    now: datetime,
    warnings: list[str],
) -> list[dict[str, Any]]:
    """Record a confirmed batch's certificates and settle its reservations' targets in one
    transaction; the target warnings are appended to `warnings`."""
    events = [b for b in decode_issuance(receipt, context.registry) if b.batch_id == batch.batch_id]
    if len(events) != 1:
        raise CertificateMismatch(batch.batch_id, f"{len(events)} BatchIssued events in {tx_hash}")
    event = events[0]
    block = int(receipt["blockNumber"], 16)
    with sessions.begin() as session:
        items = db.batch_items(session=session, batch_row_id=batch.id)
        if event.count != len(items) or len(event.certificates) != len(items):
            raise CertificateMismatch(
                batch.batch_id, f"{event.count} certificates on chain, {len(items)} items"
            )
        minted: list[db.Minted] = []
        lines: list[dict[str, Any]] = []
        for item, certificate in zip(items, event.certificates, strict=True):
            if (
                certificate.owner.lower() != item.owner.lower()
                or certificate.quantity_wh != item.quantity_wh
                or certificate.data_hash != item.data_hash
            ):
                raise CertificateMismatch(
                    batch.batch_id,
                    f"certificate {certificate.certificate_id} differs from item {item.id}",
                )
            minted.append(db.Minted(item.id, certificate.certificate_id, certificate.data_hash))
            lines.append(
                {
                    "event": "certificate_issued",
                    "certificateId": certificate.certificate_id,
                    "txHash": tx_hash,
                    "reservationId": item.reservation_id,
                    "deviceId": item.device_id,
                    "periodStart": item.period_start.isoformat(),
                    "periodEnd": item.period_end.isoformat(),
                    "quantityWh": item.quantity_wh,
                    "kind": item.kind,
                }
            )
        if not db.close_batch(
            session=session,
            batch_row_id=batch.id,
            state=db.CONFIRMED,
            tx_hash=tx_hash,
            block_number=block,
            error_code=None,
            error_detail=None,
            now=now,
        ):
            return []  # another settler recorded it
        db.record_certificates(
            session=session,
            chain_id=context.chain_id,
            batch_row_id=batch.id,
            tx_hash=tx_hash,
            block_number=block,
            minted=minted,
            now=now,
        )
        reached = _settle_targets(session, {i.reservation_id for i in items}, now)
    warnings.extend(reached)
    return lines


# --- the reservation lifecycle ------------------------------------------------------------


def advance_reservations(*, sessions: sessionmaker[Session], now: datetime) -> int:
    """Reservation lifecycle: complete by time (end passed: completed_at = end) or target
    (completed_at set by `settle`, on confirmed volume); the devices of a closed
    reservation are released at the moment it closed (the 12 h cool-down before another
    reservation takes them is the domain's). Returns how many reservations changed."""
    now = to_utc(now, field="now")
    with sessions.begin() as session:
        expired = db.complete_expired_reservations(session=session, now=now)
        released = set()
        for reservation_id, closed in db.closed_reservations_holding_devices(session=session):
            release_devices(
                session=session, reservation_id=reservation_id, device_ids=None, now=closed
            )
            released.add(reservation_id)
    return len(set(expired) | released)


# --- verify and show ----------------------------------------------------------------------


def verify_certificate(
    *, sessions: sessionmaker[Session], context: IssuanceContext, certificate_id: int
) -> Verification:
    """Recompute the stored header's keccak256 and compare it with the stored hash and with
    the chain's CertificateIssued event of `certificate_id`."""
    with sessions() as session:
        record = db.get_certificate(
            session=session, chain_id=context.chain_id, certificate_id=certificate_id
        )
        if record is None:
            raise CertificateNotFound(context.chain_id, certificate_id)
        header = get_headers(session=session, hashes=[record.data_hash]).get(record.data_hash)
    recomputed: str | None = None
    reason: str | None = None
    if header is None:
        reason = "no header stored for this certificate"
    else:
        try:
            recomputed = data_hash_hex(canonical_json(json.loads(header)))
        except (ValueError, GranularError) as error:
            reason = f"the stored header is not canonical JSON: {error}"
    event = RegistryReader(context.rpc_url, context.registry).certificate_event(
        certificate_id, block=record.block_number
    )
    on_chain = event.data_hash if event is not None else None
    if reason is None:
        if on_chain is None:
            reason = "no CertificateIssued event for this id on chain"
        elif recomputed != record.data_hash:
            reason = "the stored header does not hash to the stored data hash (tampered)"
        elif recomputed != on_chain:
            reason = "the header's hash differs from the chain's dataHash"
    return Verification(
        certificate_id=certificate_id,
        data_hash_stored=record.data_hash,
        data_hash_recomputed=recomputed,
        data_hash_on_chain=on_chain,
        tx_hash=record.tx_hash,
        ok=reason is None,
        reason=reason,
    )


def show_certificate(
    *, sessions: sessionmaker[Session], chain_id: int, certificate_id: int
) -> dict[str, Any]:
    """Header (parsed), provenance, tx hash, batch, reservation, window: what `granular
    show` prints."""
    with sessions() as session:
        record = db.get_certificate(
            session=session, chain_id=chain_id, certificate_id=certificate_id
        )
        if record is None:
            raise CertificateNotFound(chain_id, certificate_id)
        header = get_headers(session=session, hashes=[record.data_hash]).get(record.data_hash)
    item = record.item
    return {
        "certificateId": record.certificate_id,
        "chainId": record.chain_id,
        "txHash": record.tx_hash,
        "blockNumber": record.block_number,
        "dataHash": record.data_hash,
        "header": json.loads(header) if header is not None else None,
        "reservationId": item.reservation_id,
        "deviceId": item.device_id,
        "kind": item.kind,
        "quantityWh": item.quantity_wh,
        "owner": item.owner,
        "window": {
            "start": item.window_start.isoformat(),
            "periodStart": item.period_start.isoformat(),
            "periodEnd": item.period_end.isoformat(),
            "sequence": item.sequence,
        },
        "batch": {
            "batchId": record.batch.batch_id,
            "idempotencyKey": record.batch.idempotency_key,
            "parentId": record.batch.parent_id,
            "items": record.batch.item_count,
        },
        "provenance": record.provenance,
    }
