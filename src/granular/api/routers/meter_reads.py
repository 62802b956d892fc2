"""/meter-reads/{externalId}: submit reads (history, delta, aggregate) and read intervals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from granular.api.deps import Caller, Now, Sessions, require_role
from granular.api.errors import describe
from granular.api.exact_json import ExactJSONRoute
from granular.domain.reads import ReadKind, ReadOutcome
from granular.domain.units import EnergyUnit
from granular.services.accounts import Role
from granular.services.meter_reads import (
    MAX_READS_PER_REQUEST,
    SubmittedRead,
    ingest_reads,
    read_intervals,
)

router = APIRouter(prefix="/meter-reads", tags=["meter reads"], route_class=ExactJSONRoute)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
ExternalId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class ReadIn(BaseModel):
    """A read with the D-REC API's field names."""

    model_config = ConfigDict(extra="forbid")

    starttimestamp: datetime | None = None
    endtimestamp: datetime
    value: Decimal = Field(allow_inf_nan=False)


class ReadsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["history", "delta", "aggregate"]
    unit: Literal["Wh", "kWh", "MWh"] = "Wh"
    reads: list[ReadIn] = Field(min_length=1, max_length=MAX_READS_PER_REQUEST)


def _interval_json(start: datetime, end: datetime, energy_wh: int) -> dict[str, Any]:
    return {"start": start.isoformat(), "end": end.isoformat(), "energyWh": energy_wh}


def _outcome_json(outcome: ReadOutcome) -> dict[str, Any]:
    body: dict[str, Any] = {"index": outcome.index, "status": outcome.status.value}
    interval = outcome.interval
    body["interval"] = (
        None
        if interval is None
        else _interval_json(interval.start, interval.end, interval.energy_wh)
    )
    if outcome.baseline_only:
        body["baselineOnly"] = True
    if outcome.warnings:
        body["warnings"] = [
            {"code": w.code, "message": w.message, "details": dict(w.details)}
            for w in outcome.warnings
        ]
    if outcome.error is not None:
        body["error"] = describe(outcome.error)
    return body


@router.post("/{external_id}", summary="Submit meter reads; each is accepted or rejected")
async def post_reads(
    external_id: ExternalId,
    body: ReadsIn,
    request: Request,
    caller: Caller,
    sessions: Sessions,
    now: Now,
) -> dict[str, Any]:
    require_role(caller, Role.DEVICE_OWNER, Role.ISSUER)
    payload = await request.json()  # kept as received, for audit (numbers as Decimal)
    result = await run_in_threadpool(
        ingest_reads,
        sessions=sessions,
        caller=caller,
        external_id=external_id,
        kind=ReadKind(body.type),
        unit=EnergyUnit(body.unit),
        reads=[SubmittedRead(r.endtimestamp, r.value, r.starttimestamp) for r in body.reads],
        payload=payload,
        policy=request.app.state.max_energy_policy,
        now=now,
    )
    counts = {
        status: 0 for status in ("accepted", "accepted_with_warning", "duplicate", "rejected")
    }
    for outcome in result.batch.outcomes:
        counts[outcome.status.value] += 1
    return {
        "externalId": external_id,
        "submissionId": result.submission_id,
        "summary": counts,
        "reads": [_outcome_json(outcome) for outcome in result.batch.outcomes],
    }


@router.get("/{external_id}", summary="Energy intervals of a device in a time range")
def get_reads(
    external_id: ExternalId,
    caller: Caller,
    sessions: Sessions,
    start: Annotated[datetime, Query()] = EARLIEST,
    end: Annotated[datetime, Query()] = LATEST,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    organization_id: Annotated[
        int | None, Query(alias="organizationId", ge=1, le=2**31 - 1)
    ] = None,
) -> dict[str, Any]:
    page = read_intervals(
        sessions=sessions,
        caller=caller,
        external_id=external_id,
        start=start,
        end=end,
        limit=limit,
        organization_id=organization_id,
    )
    return {
        "externalId": external_id,
        "intervals": [_interval_json(i.start, i.end, i.energy_wh) for i in page.intervals],
        "totalWh": sum(i.energy_wh for i in page.intervals),
        # More intervals than `limit`: totalWh covers this page only; ask again from here.
        "nextStart": None if page.next_start is None else page.next_start.isoformat(),
    }
