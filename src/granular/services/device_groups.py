"""Device groups: register (create or update by deviceGrpId), list and read them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.accounts import Principal
from granular.adapters.db.device_groups import (
    StoredDeviceGroup,
    get_device_group,
    list_device_groups,
    upsert_device_group,
)
from granular.adapters.db.devices import group_device_ids
from granular.domain.device_groups import parse_device_group
from granular.domain.drec import sdg_labels
from granular.errors import Conflict, NotFound
from granular.services.accounts import Role


@dataclass(frozen=True, slots=True)
class GroupView:
    """A group and the ids of its organization's devices that name it."""

    group: StoredDeviceGroup
    device_ids: list[int]


def register_device_group(
    *,
    sessions: sessionmaker[Session],
    organization_id: int,
    raw: Mapping[str, object],
    now: datetime,
) -> tuple[str, GroupView]:
    """Create or update the organization's group `deviceGrpId`: "created", "updated" or
    "unchanged". A bad field raises DeviceGroupFieldInvalid naming it."""
    spec = parse_device_group(raw)
    try:
        with sessions.begin() as session:
            status, group = upsert_device_group(
                session=session, organization_id=organization_id, spec=spec, now=now
            )
            ids = group_device_ids(
                session=session, organization_id=organization_id, group_external_id=spec.external_id
            )
    except IntegrityError:
        raise Conflict(
            f"deviceGrpId: {spec.external_id!r} was stored by another request at the same "
            "time; send it again"
        ) from None
    return status, GroupView(group, ids)


def _visible(caller: Principal) -> int | None:
    """The organization whose groups the caller sees: its own for a device owner, all else."""
    return caller.organization_id if caller.role == Role.DEVICE_OWNER.value else None


def find_device_groups(
    *, sessions: sessionmaker[Session], caller: Principal, limit: int, offset: int
) -> list[StoredDeviceGroup]:
    with sessions() as session:
        return list_device_groups(
            session=session, organization_id=_visible(caller), limit=limit, offset=offset
        )


def device_group(*, sessions: sessionmaker[Session], caller: Principal, group_id: int) -> GroupView:
    """The group and its devices; another organization's group is not found for a device
    owner."""
    with sessions() as session:
        group = get_device_group(session=session, group_id=group_id)
        visible = _visible(caller)
        if group is None or (visible is not None and group.organization_id != visible):
            raise NotFound(f"deviceGroupId: no device group {group_id}")
        ids = group_device_ids(
            session=session,
            organization_id=group.organization_id,
            group_external_id=group.spec.external_id,
        )
        return GroupView(group, ids)


def group_json(group: StoredDeviceGroup, device_ids: list[int] | None = None) -> dict[str, Any]:
    spec = group.spec
    body: dict[str, Any] = {
        "id": group.id,
        "deviceGrpId": spec.external_id,
        "name": spec.name,
        "SDGBenefits": sdg_labels(spec.sdg_benefits),
        "sdgBenefitsBits": spec.sdg_benefits,
        "impactStory": spec.impact_story,
        "images": list(spec.images),
        "organizationId": group.organization_id,
    }
    if device_ids is not None:
        body["deviceIds"] = device_ids
    return body
