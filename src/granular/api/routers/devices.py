"""/devices: register devices (JSON or D-REC CSV) and find them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Query, Response, UploadFile

from granular.adapters.db.devices import DeviceFilter
from granular.api.deps import Caller, Now, Sessions, require_role
from granular.errors import ValidationError
from granular.services.accounts import Role
from granular.services.devices import (
    RowResult,
    device_json,
    find_devices,
    read_csv,
    register_devices,
)
from granular.services.reservations import reservable_filter

router = APIRouter(prefix="/devices", tags=["devices"])
WRITERS = (Role.DEVICE_OWNER, Role.ISSUER)


class DeviceRejected(ValidationError):
    code = "device_rejected"

    def __init__(self, result: RowResult) -> None:
        super().__init__(f"{result.field}: {result.reason}")
        self.details = {
            "field": result.field,
            "reason": result.reason,
            "rule": result.code,
            "externalId": result.external_id,
        }


def _result_json(result: RowResult, line_key: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        line_key: result.line,
        "status": result.status,
        "externalId": result.external_id,
    }
    if result.device is not None:
        body["device"] = device_json(result.device)
    if result.status == "rejected":
        body.update(field=result.field, reason=result.reason, code=result.code)
    return body


@router.post("", summary="Register or update one device, or a JSON list of devices")
def post_devices(
    caller: Caller,
    sessions: Sessions,
    now: Now,
    response: Response,
    payload: Annotated[dict[str, Any] | list[dict[str, Any]], Body()],
) -> dict[str, Any]:
    require_role(caller, *WRITERS)
    items = payload if isinstance(payload, list) else [payload]
    results = register_devices(
        sessions=sessions,
        organization_id=caller.organization_id,
        rows=list(enumerate(items)),
        now=now,
    )
    if isinstance(payload, dict):
        (result,) = results
        if result.status == "rejected":
            raise DeviceRejected(result)
        response.status_code = 201 if result.status == "created" else 200
        return {"status": result.status, "device": device_json(result.device)}  # type: ignore[arg-type]
    return _summary(results, "index")


@router.post("/bulk", summary="Register or update devices from a D-REC CSV file")
def post_devices_csv(
    caller: Caller, sessions: Sessions, now: Now, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    require_role(caller, *WRITERS)
    rows = read_csv(file.file.read())
    results = register_devices(
        sessions=sessions, organization_id=caller.organization_id, rows=rows, now=now
    )
    return _summary(results, "line")


def _summary(results: list[RowResult], line_key: str) -> dict[str, Any]:
    counts = {status: 0 for status in ("created", "updated", "unchanged", "rejected")}
    for result in results:
        counts[result.status] += 1
    return {"summary": counts, "results": [_result_json(r, line_key) for r in results]}


@router.get("", summary="Find devices by the filters buyers use")
def get_devices(
    caller: Caller,
    sessions: Sessions,
    now: Now,
    country_code: Annotated[str | None, Query(alias="countryCode")] = None,
    fuel_code: Annotated[str | None, Query(alias="fuelCode")] = None,
    off_taker: Annotated[str | None, Query(alias="offTaker")] = None,
    device_type_code: Annotated[str | None, Query(alias="deviceTypeCode")] = None,
    capacity_min: Annotated[int | None, Query(alias="capacityMin", ge=0)] = None,
    capacity_max: Annotated[int | None, Query(alias="capacityMax", ge=0)] = None,
    reservable: Annotated[bool | None, Query(alias="reservable")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    own_only = caller.role == Role.DEVICE_OWNER.value
    where = DeviceFilter(
        organization_id=caller.organization_id if own_only else None,
        country_code=country_code,
        fuel_code=fuel_code,
        off_taker=off_taker,
        device_type_code=device_type_code,
        capacity_min_w=capacity_min,
        capacity_max_w=capacity_max,
    )
    # reservable: held by no reservation and released by none in the last 12 h (or, when
    # false, the opposite)
    where = reservable_filter(sessions=sessions, where=where, reservable=reservable, now=now)
    devices = find_devices(sessions=sessions, where=where, limit=limit, offset=offset)
    return {"devices": [device_json(d) for d in devices], "limit": limit, "offset": offset}
