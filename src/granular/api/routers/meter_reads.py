"""/meter-reads/{externalId}: submit reads (history, delta, aggregate) and read intervals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from granular.api.deps import Caller, Now, Sessions, require_role
from granular.api.errors import camel, describe, error_body, jsonable
from granular.api.exact_json import ExactJSONRoute, SafeJSONResponse
from granular.api.schemas_fleet import IntervalsPublic, ReadsPublic
from granular.domain.reads import ReadKind, ReadOutcome, ReadStatus
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
    body: dict[str, Any] = {"index": outcome.index, "status": camel(outcome.status.value)}
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
            {"code": w.code, "message": w.message, "details": jsonable(dict(w.details))}
            for w in outcome.warnings
        ]
    if outcome.error is not None:
        body["error"] = describe(outcome.error)
    return body


@router.post(
    "/{external_id}",
    summary="Submit meter reads; each is accepted or rejected",
    response_model=ReadsPublic,
    response_model_exclude_unset=True,
    responses={
        422: {
            "description": "every read was rejected: `error` (all_reads_rejected) beside "
            "the same `externalId`, `submissionId`, `summary` and `reads`, or a body that "
            "does not fit the schema (invalid_request)"
        }
    },
)
async def post_reads(
    external_id: ExternalId,
    body: ReadsIn,
    request: Request,
    caller: Caller,
    sessions: Sessions,
    now: Now,
) -> Any:
    """Each read is accepted, accepted with a warning, a duplicate, or rejected. 200 when at
    least one read was not rejected (check `summary.rejected`); 422 `all_reads_rejected`
    when every read was rejected, with the same per-read results beside `error`."""
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
    counts = {camel(status.value): 0 for status in ReadStatus}
    for outcome in result.batch.outcomes:
        counts[camel(outcome.status.value)] += 1
    answer: dict[str, Any] = {
        "externalId": external_id,
        "submissionId": result.submission_id,
        "summary": counts,
        "reads": [_outcome_json(outcome) for outcome in result.batch.outcomes],
    }
    if counts["rejected"] == len(result.batch.outcomes):
        # Nothing was taken: a client that looks only at the status must not see success.
        rejected = error_body(
            "all_reads_rejected",
            f"all {len(result.batch.outcomes)} reads were rejected; see reads[].error",
            {"rejected": counts["rejected"]},
        )
        return SafeJSONResponse({**rejected, **answer}, status_code=422)
    # Documented by ReadsPublic, returned as built: validating 10,000 results on every
    # request cost a fifth of the ingestion rate; tests/api/test_meter_reads.py holds the
    # answers to the model instead.
    return SafeJSONResponse(answer)


@router.get(
    "/{external_id}",
    response_model=IntervalsPublic,
    summary="Energy intervals of a device in a time range",
)
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
