"""/reservations: a buyer reserves devices; issuers and viewers watch.

A reservation renders as:

    {"id": 1, "organizationId": 4, "status": "live" | "ended" | "completed",
     "devices": [12, 13],                      # production device ids held now
     "consumptionDevices": [40],               # the buyer's consumption meters held now
     "deviceHistory": [{"deviceId": 12, "kind": "production", "addedAt": "...",
                        "releasedAt": null}, ...],
     "frequency": "monthly", "start": "...", "end": "...",
     "targetVolumeWh": 1000000, "authorityToExceed": false,
     "wallet": "0x<EIP-55>", "gasTier": "standard",
     "createdAt": "...", "updatedAt": "...", "endedAt": null, "completedAt": null,
     "volumes": {"issuedWh": 0, "requestedWh": 5400, "failedWh": 0, "leftoverWh": 0}}

Timestamps are ISO 8601 in UTC. `issuedWh`, `failedWh` and `leftoverWh` stay 0 until the
issuance service exists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, field_validator

from granular.api.deps import Caller, Now, Sessions
from granular.api.schemas_fleet import ReservationPublic, ReservationsPublic
from granular.api.schemas_reports import MatchingPublic
from granular.domain.devices import DeviceKind
from granular.domain.gas import Tier
from granular.domain.units import MAX_WH
from granular.domain.windows import Frequency
from granular.services import matching
from granular.services.reservations import (
    NewReservation,
    ReservationChange,
    ReservationView,
    change_reservation,
    checksum_wallet,
    create_reservation,
    end_live_reservation,
    find_reservations,
    show_reservation,
)

router = APIRouter(prefix="/reservations", tags=["reservations"])

DeviceId = Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)]
EnergyWh = Annotated[int, Field(strict=True, le=MAX_WH)]
ReservationId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _iso_only(value: object) -> object:
    """Timestamps must be ISO 8601 strings (a bare number is not a timestamp here);
    `AwareDatetime` then refuses one without a time zone."""
    if value is not None and not isinstance(value, str):
        raise ValueError("expected an ISO 8601 timestamp with a time zone")
    return value


class ReservationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    devices: list[DeviceId] = Field(max_length=10_000)
    consumption_devices: list[DeviceId] = Field(
        default_factory=list, alias="consumptionDevices", max_length=10_000
    )
    frequency: Frequency
    start: AwareDatetime
    end: AwareDatetime
    target_volume_wh: EnergyWh = Field(alias="targetVolumeWh")
    authority_to_exceed: StrictBool = Field(default=False, alias="authorityToExceed")
    wallet: str
    gas_tier: Tier = Field(default=Tier.STANDARD, alias="gasTier")

    _timestamps = field_validator("start", "end", mode="before")(_iso_only)

    @field_validator("wallet")
    @classmethod
    def _checksummed(cls, value: str) -> str:
        return checksum_wallet(value)

    def to_new(self) -> NewReservation:
        return NewReservation(
            devices=frozenset(self.devices),
            frequency=self.frequency,
            start=self.start,
            end=self.end,
            target_volume_wh=self.target_volume_wh,
            authority_to_exceed=self.authority_to_exceed,
            wallet=self.wallet,
            gas_tier=self.gas_tier,
            consumption_devices=frozenset(self.consumption_devices),
        )


class ReservationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    add_devices: list[DeviceId] = Field(default_factory=list, alias="addDevices", max_length=10_000)
    remove_devices: list[DeviceId] = Field(
        default_factory=list, alias="removeDevices", max_length=10_000
    )
    add_consumption_devices: list[DeviceId] = Field(
        default_factory=list, alias="addConsumptionDevices", max_length=10_000
    )
    remove_consumption_devices: list[DeviceId] = Field(
        default_factory=list, alias="removeConsumptionDevices", max_length=10_000
    )
    end: AwareDatetime | None = None
    target_volume_wh: EnergyWh | None = Field(default=None, alias="targetVolumeWh")
    authority_to_exceed: StrictBool | None = Field(default=None, alias="authorityToExceed")
    frequency: Frequency | None = None

    _timestamps = field_validator("end", mode="before")(_iso_only)

    def to_change(self) -> ReservationChange:
        return ReservationChange(
            add_devices=frozenset(self.add_devices),
            remove_devices=frozenset(self.remove_devices),
            add_consumption_devices=frozenset(self.add_consumption_devices),
            remove_consumption_devices=frozenset(self.remove_consumption_devices),
            end=self.end,
            target_volume_wh=self.target_volume_wh,
            authority_to_exceed=self.authority_to_exceed,
            frequency=self.frequency,
        )


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def reservation_json(view: ReservationView) -> dict[str, Any]:
    r = view.reservation
    return {
        "id": r.id,
        "organizationId": r.organization_id,
        "status": view.status.value,
        "devices": sorted(r.held_ids_of(DeviceKind.PRODUCTION)),
        "consumptionDevices": sorted(r.held_ids_of(DeviceKind.CONSUMPTION)),
        "deviceHistory": [
            {
                "deviceId": s.device_id,
                "kind": s.kind.value,
                "addedAt": _time(s.added_at),
                "releasedAt": _time(s.released_at),
            }
            for s in r.stints
        ],
        "frequency": r.frequency,
        "start": _time(r.start),
        "end": _time(r.end),
        "targetVolumeWh": r.target_volume_wh,
        "authorityToExceed": r.authority_to_exceed,
        "wallet": r.wallet,
        "gasTier": r.gas_tier,
        "createdAt": _time(r.created_at),
        "updatedAt": _time(r.updated_at),
        "endedAt": _time(r.ended_at),
        "completedAt": _time(r.completed_at),
        "volumes": {
            "issuedWh": view.volumes.issued_wh,
            "requestedWh": view.volumes.requested_wh,
            "failedWh": view.volumes.failed_wh,
            "leftoverWh": view.volumes.leftover_wh,
        },
    }


@router.post(
    "",
    status_code=201,
    response_model=ReservationPublic,
    response_model_exclude_unset=True,  # `matching` only once the job has seen it
    summary="Reserve devices (buyers only)",
)
def post_reservation(
    caller: Caller, sessions: Sessions, now: Now, body: ReservationIn
) -> dict[str, Any]:
    view = create_reservation(sessions=sessions, principal=caller, new=body.to_new(), now=now)
    return reservation_json(view)


@router.patch(
    "/{reservation_id}",
    response_model=ReservationPublic,
    response_model_exclude_unset=True,  # `matching` only once the job has seen it
    summary="Add or remove devices, move the end, set the target",
)
def patch_reservation(
    caller: Caller,
    sessions: Sessions,
    now: Now,
    reservation_id: ReservationId,
    body: ReservationPatch,
) -> dict[str, Any]:
    view = change_reservation(
        sessions=sessions,
        principal=caller,
        reservation_id=reservation_id,
        change=body.to_change(),
        now=now,
    )
    return reservation_json(view)


@router.delete(
    "/{reservation_id}",
    response_model=ReservationPublic,
    response_model_exclude_unset=True,  # `matching` only once the job has seen it
    summary="End a reservation now and release its devices",
)
def delete_reservation(
    caller: Caller, sessions: Sessions, now: Now, reservation_id: ReservationId
) -> dict[str, Any]:
    view = end_live_reservation(
        sessions=sessions, principal=caller, reservation_id=reservation_id, now=now
    )
    return reservation_json(view)


@router.get(
    "",
    response_model=ReservationsPublic,
    response_model_exclude_unset=True,
    summary="Reservations with their volumes (a buyer sees its own)",
)
def get_reservations(
    caller: Caller,
    sessions: Sessions,
    now: Now,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,  # SQLite refuses a larger one
) -> dict[str, Any]:
    views = find_reservations(
        sessions=sessions, principal=caller, limit=limit, offset=offset, now=now
    )
    return {"reservations": [reservation_json(v) for v in views], "limit": limit, "offset": offset}


@router.get(
    "/{reservation_id}",
    response_model=ReservationPublic,
    response_model_exclude_unset=True,  # `matching` only once the job has seen it
    summary="One reservation with its volumes",
)
def get_reservation(
    caller: Caller, sessions: Sessions, now: Now, reservation_id: ReservationId
) -> dict[str, Any]:
    view = show_reservation(
        sessions=sessions, principal=caller, reservation_id=reservation_id, now=now
    )
    # Matching claims of a reservation with consumption devices (services.matching): shown
    # once the matching job has looked at it (e.g. waiting for the operator approval).
    status = matching.status_of(sessions=sessions, reservation_id=reservation_id)
    if status is None:
        return reservation_json(view)
    return reservation_json(view) | {"matching": MatchingPublic.of(status)}
