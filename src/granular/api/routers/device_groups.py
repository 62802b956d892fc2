"""/device-groups: D-REC device groups (deviceGrpId, name, SDG benefits, impact story,
images); devices name theirs by `deviceGrpId`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response
from pydantic import WithJsonSchema

from granular.api.deps import Caller, Now, Sessions, require_role
from granular.api.exact_json import ExactJSONRoute
from granular.api.schemas_fleet import (
    DEVICE_GROUP_IN_SCHEMA,
    DeviceGroupOne,
    DeviceGroupsPublic,
    DeviceGroupWritten,
)
from granular.services.accounts import Role
from granular.services.device_groups import (
    device_group,
    find_device_groups,
    group_json,
    register_device_group,
)

router = APIRouter(prefix="/device-groups", tags=["device groups"], route_class=ExactJSONRoute)
WRITERS = (Role.DEVICE_OWNER, Role.ISSUER)
MAX_INT32 = 2**31 - 1  # device_groups.id is an INTEGER column
MAX_INT64 = 2**63 - 1


@router.post(
    "",
    response_model=DeviceGroupWritten,
    response_model_exclude_unset=True,
    responses={201: {"model": DeviceGroupWritten, "description": "created"}},
    summary="Create or update a device group of the caller's organization",
)
def post_device_group(
    caller: Caller,
    sessions: Sessions,
    now: Now,
    response: Response,
    payload: Annotated[dict[str, Any], WithJsonSchema(DEVICE_GROUP_IN_SCHEMA), Body()],
) -> dict[str, Any]:
    """`deviceGrpId` and `name` required; `SDGBenefits` as goal numbers (7, "SDG7") or
    names, a list or one text; `impactStory`; `images` (a list, or one text separated by
    `,` or `;`). 201 when created, 200 when updated or unchanged."""
    require_role(caller, *WRITERS)
    status, view = register_device_group(
        sessions=sessions, organization_id=caller.organization_id, raw=payload, now=now
    )
    response.status_code = 201 if status == "created" else 200
    return {"status": status, "deviceGroup": group_json(view.group, view.device_ids)}


@router.get(
    "",
    response_model=DeviceGroupsPublic,
    response_model_exclude_unset=True,
    summary="List device groups (a device owner sees its own)",
)
def get_device_groups(
    caller: Caller,
    sessions: Sessions,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
) -> dict[str, Any]:
    groups = find_device_groups(sessions=sessions, caller=caller, limit=limit, offset=offset)
    return {"deviceGroups": [group_json(g) for g in groups], "limit": limit, "offset": offset}


@router.get(
    "/{deviceGroupId}",
    response_model=DeviceGroupOne,
    response_model_exclude_unset=True,
    summary="One device group and the ids of its devices",
)
def get_device_group(
    caller: Caller,
    sessions: Sessions,
    group_id: Annotated[int, Path(alias="deviceGroupId", ge=1, le=MAX_INT32)],
) -> dict[str, Any]:
    view = device_group(sessions=sessions, caller=caller, group_id=group_id)
    return {"deviceGroup": group_json(view.group, view.device_ids)}
