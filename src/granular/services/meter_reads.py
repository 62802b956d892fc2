"""Ingesting meter reads: validate one request's reads in order, store what was accepted,
keep the request as received. One database transaction per request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.accounts import Principal
from granular.adapters.db.devices import (
    StoredDevice,
    devices_with_external_id,
    get_device,
    latest_device_revision,
)
from granular.adapters.db.readings import (
    add_reads_and_intervals,
    add_submission,
    list_intervals,
    lock_read_state,
    recorded_for,
    save_read_state,
    trailing_year,
)
from granular.domain.devices import DeviceKind
from granular.domain.energy import (
    DeviceProfile,
    EnergyInterval,
    MaxEnergyPolicy,
    MaxEnergyRule,
    TrailingYear,
)
from granular.domain.reads import RawRead, ReadBatch, ReadKind, validate_reads
from granular.domain.units import EnergyUnit, RuleViolation, to_utc
from granular.errors import Conflict, NotFound
from granular.services.accounts import Role

MAX_READS_PER_REQUEST = 10_000


@dataclass(frozen=True, slots=True)
class SubmittedRead:
    """One read of the request body, its D-REC field names already mapped."""

    end: datetime
    value: Decimal
    start: datetime | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    device: StoredDevice
    submission_id: int
    batch: ReadBatch


def device_profile(device: StoredDevice) -> DeviceProfile:
    spec = device.spec
    return DeviceProfile(
        device=spec.external_id,
        capacity_w=spec.capacity_w,
        commissioning_date=spec.commissioning_date,
        yield_kwh_per_kw_year=spec.yield_kwh_per_kw_year,
        kind=spec.kind,
    )


def _yield_rule_applies(profile: DeviceProfile, policy: MaxEnergyPolicy) -> bool:
    return policy.name is MaxEnergyRule.DREC and profile.kind is DeviceKind.PRODUCTION


def _device_of(session: Session, organization_id: int, external_id: str) -> StoredDevice:
    device = get_device(session=session, organization_id=organization_id, external_id=external_id)
    if device is None:
        raise NotFound(f"externalId: no device {external_id!r} in your organization")
    return device


def _utc_or_none(moment: datetime | None) -> datetime | None:
    """`moment` in UTC, or None when it has no zone or UTC cannot hold it: such a read is
    rejected by the rules; it only takes no part in the lookup of what is stored."""
    if moment is None:
        return None
    try:
        return to_utc(moment)
    except RuleViolation:
        return None


def ingest_reads(
    *,
    sessions: sessionmaker[Session],
    caller: Principal,
    external_id: str,
    kind: ReadKind,
    unit: EnergyUnit,
    reads: Sequence[SubmittedRead],
    payload: Mapping[str, Any],
    policy: MaxEnergyPolicy,
    now: datetime,
) -> IngestResult:
    """Validate `reads` in order against the device's stored state and each other; store
    the accepted reads, their intervals, the new state and the request, atomically. The
    request records the device revision whose parameters validated it."""
    raws = [RawRead(kind, read.end, read.value, read.start, unit) for read in reads]
    ends = [end for end in (_utc_or_none(r.end) for r in reads) if end is not None]
    starts = [start for start in (_utc_or_none(r.start) for r in reads) if start is not None]
    span = (min(starts), max(ends)) if kind is ReadKind.HISTORY and starts and ends else None
    try:
        with sessions.begin() as session:
            device = _device_of(session, caller.organization_id, external_id)
            state = lock_read_state(session=session, device_id=device.id)
            # Read under the device's lock, which an update of the device also takes: the
            # parameters validating the reads are exactly the revision the request names.
            revision = latest_device_revision(session=session, device=device)
            if revision is not None:
                device = revision.device
            recorded = recorded_for(
                session=session,
                device_id=device.id,
                device_key=external_id,
                ends=ends,
                history_span=span,
            )
            profile = device_profile(device)
            year = TrailingYear.nothing_stored()
            if ends and _yield_rule_applies(profile, policy):
                # Once per request: the device's stored energy in every trailing year the
                # request's reads can end, not one query per read.
                year = trailing_year(
                    session=session,
                    device_id=device.id,
                    device_key=external_id,
                    first_end=min(ends),
                    last_end=max(ends),
                )
            batch = validate_reads(
                raws,
                device=profile,
                state=state,
                recorded=recorded,
                year=year,
                policy=policy,
                now=now,
            )
            submission_id = add_submission(
                session=session,
                device_id=device.id,
                api_key_id=caller.api_key_id,
                received_at=now,
                kind=kind.value,
                unit=unit.value,
                payload=dict(payload),
                read_count=len(reads),
                accepted_count=len(batch.accepted_reads),
                device_revision_id=None if revision is None else revision.id,
            )
            add_reads_and_intervals(
                session=session,
                device_id=device.id,
                submission_id=submission_id,
                reads=batch.accepted_reads,
                intervals=[
                    (outcome.interval, outcome.read.kind)
                    for outcome in batch.outcomes
                    if outcome.interval is not None and outcome.read is not None
                ],
            )
            save_read_state(session=session, device_id=device.id, state=batch.state)
    except IntegrityError:
        # A unique key caught a write the device lock did not serialise (it should not
        # happen): nothing of this request was stored, so a retry counts nothing twice.
        raise Conflict(
            f"externalId {external_id!r}: another submission for this device was stored at "
            "the same time; nothing of this one was kept, send it again"
        ) from None
    return IngestResult(device, submission_id, batch)


@dataclass(frozen=True, slots=True)
class IntervalPage:
    """Up to `limit` intervals, oldest first. `next_start` is set when more intervals
    overlap the range: ask again from there (intervals never overlap, so none is missed)."""

    intervals: tuple[EnergyInterval, ...]
    next_start: datetime | None


def _readable_device(
    session: Session, caller: Principal, external_id: str, organization_id: int | None
) -> StoredDevice:
    """A device owner reads its own organization's devices only; the issuer, viewers and
    buyers read any, naming the organization when the externalId is not unique."""
    if caller.role == Role.DEVICE_OWNER.value:
        if organization_id not in (None, caller.organization_id):
            raise NotFound(f"externalId: no device {external_id!r} in your organization")
        return _device_of(session, caller.organization_id, external_id)
    found = devices_with_external_id(
        session=session, organization_id=organization_id, external_id=external_id
    )
    if not found:
        where = "" if organization_id is None else f" in organization {organization_id}"
        raise NotFound(f"externalId: no device {external_id!r}{where}")
    if len(found) > 1:
        raise Conflict(
            f"externalId: {external_id!r} names devices of several organizations; "
            "pass organizationId"
        )
    return found[0]


def read_intervals(
    *,
    sessions: sessionmaker[Session],
    caller: Principal,
    external_id: str,
    start: datetime,
    end: datetime,
    limit: int,
    organization_id: int | None = None,
) -> IntervalPage:
    """The device's intervals overlapping `[start, end)`. Bounds in any zone are compared in
    UTC (SQLite compares the stored UTC text, so a +02:00 bound must be converted first)."""
    start = to_utc(start, field="start")
    end = to_utc(end, field="end")
    with sessions() as session:
        device = _readable_device(session, caller, external_id, organization_id)
        found = list_intervals(
            session=session,
            device_id=device.id,
            device_key=external_id,
            start=start,
            end=end,
            limit=limit + 1,
        )
    page = tuple(found[:limit])
    return IntervalPage(page, page[-1].end if len(found) > limit else None)
