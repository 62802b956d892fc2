"""/devices: register devices (JSON or D-REC CSV), find them, read their revisions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Path, Query, Response, UploadFile
from pydantic import WithJsonSchema

from granular.api.deps import Caller, Now, Sessions, require_role
from granular.api.exact_json import ExactJSONRoute
from granular.api.schemas_fleet import (
    DEVICES_IN_SCHEMA,
    DeviceRevisionsPublic,
    DeviceRowsPublic,
    DevicesPublic,
    DeviceWritten,
)
from granular.domain.devices import CODE, COUNTRY_CODE, EXTERNAL_ID, OFF_TAKERS, DeviceKind
from granular.errors import ValidationError
from granular.services.accounts import Role
from granular.services.devices import (
    DeviceSearch,
    RowResult,
    device_json,
    device_revisions,
    find_devices,
    register_csv,
    register_devices,
    revision_json,
)

router = APIRouter(prefix="/devices", tags=["devices"], route_class=ExactJSONRoute)
WRITERS = (Role.DEVICE_OWNER, Role.ISSUER)
MAX_INT64 = 2**63 - 1  # what a database integer parameter can hold (SQLite refuses more)
MAX_INT32 = 2**31 - 1  # devices.id is an INTEGER column: PostgreSQL refuses more
# Filters take the shapes the fields are stored in (a NUL would be a 500 on PostgreSQL).
OFF_TAKER = f"^({'|'.join(OFF_TAKERS)})$"


class DeviceRejected(ValidationError):
    code = "device_rejected"

    def __init__(self, result: RowResult) -> None:
        super().__init__(
            f"{result.field}: {result.reason}",
            {
                "field": result.field,
                "reason": result.reason,
                "rule": result.code,
                "externalId": result.external_id,
                **({} if result.valid is None else {"valid": result.valid}),
            },
        )


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
        if result.valid is not None:
            body["valid"] = result.valid
    return body


@router.post(
    "",
    response_model=DeviceWritten | DeviceRowsPublic,
    response_model_exclude_unset=True,
    responses={
        200: {"description": "one device updated or unchanged, or a list's per-entry results"},
        201: {"model": DeviceWritten, "description": "one device created"},
    },
    summary="Register or update one device, or a JSON list of devices",
)
def post_devices(
    caller: Caller,
    sessions: Sessions,
    now: Now,
    response: Response,
    payload: Annotated[
        dict[str, Any] | list[dict[str, Any]], WithJsonSchema(DEVICES_IN_SCHEMA), Body()
    ],
) -> dict[str, Any]:
    require_role(caller, *WRITERS)
    items = payload if isinstance(payload, list) else [payload]
    results = register_devices(
        sessions=sessions,
        organization_id=caller.organization_id,
        rows=list(enumerate(items)),
        now=now,
        api_key_id=caller.api_key_id,
    )
    if isinstance(payload, dict):
        (result,) = results
        if result.status == "rejected":
            raise DeviceRejected(result)
        response.status_code = 201 if result.status == "created" else 200
        return {"status": result.status, "device": device_json(result.device)}  # type: ignore[arg-type]
    return _summary(results, "index")


@router.post(
    "/bulk",
    response_model=DeviceRowsPublic,
    response_model_exclude_unset=True,
    summary="Register or update devices from a D-REC CSV file",
)
def post_devices_csv(
    caller: Caller, sessions: Sessions, now: Now, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    require_role(caller, *WRITERS)
    results = register_csv(
        sessions=sessions,
        organization_id=caller.organization_id,
        content=file.file.read(),
        now=now,
        api_key_id=caller.api_key_id,
    )
    return _summary(results, "line")


def _summary(results: list[RowResult], line_key: str) -> dict[str, Any]:
    counts = {status: 0 for status in ("created", "updated", "unchanged", "rejected")}
    for result in results:
        counts[result.status] += 1
    return {"summary": counts, "results": [_result_json(r, line_key) for r in results]}


@router.get(
    "",
    response_model=DevicesPublic,
    response_model_exclude_unset=True,
    summary="Find devices by the filters buyers use",
)
def get_devices(
    caller: Caller,
    sessions: Sessions,
    now: Now,
    country_code: Annotated[
        str | None, Query(alias="countryCode", pattern=COUNTRY_CODE.pattern)
    ] = None,
    fuel_code: Annotated[str | None, Query(alias="fuelCode", pattern=CODE.pattern)] = None,
    off_taker: Annotated[str | None, Query(alias="offTaker", pattern=OFF_TAKER)] = None,
    device_type_code: Annotated[
        str | None, Query(alias="deviceTypeCode", pattern=CODE.pattern)
    ] = None,
    capacity_min: Annotated[int | None, Query(alias="capacityMin", ge=0, le=MAX_INT64)] = None,
    capacity_max: Annotated[int | None, Query(alias="capacityMax", ge=0, le=MAX_INT64)] = None,
    reservable: Annotated[bool | None, Query(alias="reservable")] = None,
    group: Annotated[str | None, Query(alias="deviceGrpId", pattern=EXTERNAL_ID.pattern)] = None,
    kind: Annotated[DeviceKind | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
) -> dict[str, Any]:
    search = DeviceSearch(
        country_code=country_code,
        fuel_code=fuel_code,
        off_taker=off_taker,
        device_type_code=device_type_code,
        capacity_min_w=capacity_min,
        capacity_max_w=capacity_max,
        group_external_id=group,
        kind=kind,
    )
    devices = find_devices(
        sessions=sessions,
        caller=caller,
        search=search,
        reservable=reservable,
        now=now,
        limit=limit,
        offset=offset,
    )
    return {"devices": [device_json(d) for d in devices], "limit": limit, "offset": offset}


@router.get(
    "/{deviceId}/revisions",
    response_model=DeviceRevisionsPublic,
    response_model_exclude_unset=True,
    summary="Every revision of a device's parameters",
)
def get_device_revisions(
    caller: Caller,
    sessions: Sessions,
    device_id: Annotated[int, Path(alias="deviceId", ge=1, le=MAX_INT32)],
) -> dict[str, Any]:
    """The device's revisions, oldest first: the fields of GET /devices as each revision
    wrote them, its `revision` number (from 1) and `validFrom`, when it came into force."""
    revisions = device_revisions(sessions=sessions, caller=caller, device_id=device_id)
    return {"revisions": [revision_json(r) for r in revisions]}
