"""Typed answers of the fleet API: devices, device groups, codes, meter reads and
reservations. The same family as `api/schemas.py` (`...Public` is what the API returns),
camelCase on the wire through each field's alias.

Each model forbids extra fields: the routes build their answers with the services'
`..._json` functions and FastAPI validates them against `response_model`, so a key the
model does not declare is a 500 in the tests, never a field silently dropped from the
answer or missing from /docs. Instants are ISO 8601 strings in UTC; energy is whole Wh.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from granular.api.schemas_reports import MatchingPublic
from granular.domain.devices import COLUMNS, REQUIRED


class _Public(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="forbid")


# --- errors -------------------------------------------------------------------------------


class ErrorDetailPublic(_Public):
    code: str = Field(description="stable, machine-readable (snake_case)")
    message: str
    details: dict[str, Any] = Field(
        description="camelCase keys: `field` (the request field), `value`, `rule`, the numbers"
        "; `problems` for a body that does not fit the schema"
    )


class ErrorBody(_Public):
    """Every error: `{"error": {"code", "message", "details"}}`."""

    error: ErrorDetailPublic


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "malformed JSON"),
        (401, "no API key, or an unknown or revoked one"),
        (403, "the key's role may not do this"),
        (404, "not found (another organization's included)"),
        (409, "a concurrent write: send it again"),
        (413, "body over the size limit"),
        (422, "a broken rule, or a body that does not fit the schema"),
    )
}
# Routes that read the chain (the registry commands) also answer 503 when the node is down.
CHAIN_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    503: {
        "model": ErrorBody,
        "description": "chain_unavailable: the RPC node did not answer; retry after Retry-After",
    },
}


# --- devices ------------------------------------------------------------------------------


class DevicePublic(_Public):
    """A device with its D-REC fields (the names of the D-REC device file)."""

    id: int
    external_id: str = Field(alias="externalId")
    project_name: str | None = Field(alias="projectName")
    country_code: str = Field(alias="countryCode")
    fuel_code: str = Field(alias="fuelCode")
    device_type_code: str = Field(alias="deviceTypeCode")
    capacity: int = Field(description="W (for a consumption meter: its connection capacity)")
    commissioning_date: str = Field(alias="commissioningDate")
    grid_interconnection: bool = Field(alias="gridInterconnection")
    off_taker: str = Field(alias="offTaker")
    yield_value: str = Field(alias="yieldValue", description="kWh per kW and year, a decimal")
    latitude: str | None
    longitude: str | None
    description: str | None
    kind: Literal["production", "consumption"]
    organization_id: int = Field(alias="organizationId")
    version: str | None
    device_grp_id: str | None = Field(alias="deviceGrpId")
    org_id: str | None = Field(alias="orgId")
    organisation_name: str | None = Field(alias="organisationName")
    device_on_boarded_by: str | None = Field(alias="deviceOnBoardedBy")
    device_oem: str | None = Field(alias="deviceOEM")
    address: str | None
    postal_code: str | None = Field(alias="postalCode")
    energy_storage: bool | None = Field(alias="energyStorage")
    energy_storage_capacity: int | None = Field(alias="energyStorageCapacity", description="Wh")
    quality_labels: str | None = Field(alias="qualityLabels")
    sdg_benefits: list[str] = Field(alias="SDGBenefits", description="`SDG<n>` labels")
    sdg_benefits_bits: int = Field(alias="sdgBenefitsBits", description="bit n - 1 for SDG n")
    impact_story: str | None = Field(alias="impactStory")
    images: list[str]


class DeviceRevisionPublic(DevicePublic):
    revision: int = Field(description="from 1")
    valid_from: str = Field(alias="validFrom", description="when it came into force")


class DeviceWritten(_Public):
    """`POST /devices` with one device: 201 `created`, 200 `updated` or `unchanged`."""

    status: Literal["created", "updated", "unchanged"]
    device: DevicePublic


class DeviceRowResult(_Public):
    """One entry of a list or a file: by `index` (JSON list) or `line` (file)."""

    index: int | None = None
    line: int | None = None
    status: Literal["created", "updated", "unchanged", "rejected"]
    external_id: str | None = Field(alias="externalId")
    device: DevicePublic | None = None
    field: str | None = Field(default=None, description="rejected: the field at fault")
    reason: str | None = None
    code: str | None = None
    valid: list[str] | None = Field(default=None, description="the accepted codes")


class RowCounts(_Public):
    created: int
    updated: int
    unchanged: int
    rejected: int


class DeviceRowsPublic(_Public):
    summary: RowCounts
    results: list[DeviceRowResult]


class DevicesPublic(_Public):
    devices: list[DevicePublic]
    limit: int
    offset: int


class DeviceRevisionsPublic(_Public):
    revisions: list[DeviceRevisionPublic]


# --- device groups ------------------------------------------------------------------------


class DeviceGroupPublic(_Public):
    id: int
    device_grp_id: str = Field(alias="deviceGrpId")
    name: str
    sdg_benefits: list[str] = Field(alias="SDGBenefits")
    sdg_benefits_bits: int = Field(alias="sdgBenefitsBits")
    impact_story: str | None = Field(alias="impactStory")
    images: list[str]
    organization_id: int = Field(alias="organizationId")
    device_ids: list[int] | None = Field(default=None, alias="deviceIds")


class DeviceGroupWritten(_Public):
    """201 `created`, 200 `updated` or `unchanged`."""

    status: Literal["created", "updated", "unchanged"]
    device_group: DeviceGroupPublic = Field(alias="deviceGroup")


class DeviceGroupOne(_Public):
    device_group: DeviceGroupPublic = Field(alias="deviceGroup")


class DeviceGroupsPublic(_Public):
    device_groups: list[DeviceGroupPublic] = Field(alias="deviceGroups")
    limit: int
    offset: int


# --- codes --------------------------------------------------------------------------------


class CodePublic(_Public):
    code: str
    name: str
    drec: bool = Field(description="used by the D-REC programme")


class SdgPublic(_Public):
    number: int
    code: str
    name: str
    bit: int


class CodesPublic(_Public):
    fuel_codes: list[CodePublic] = Field(alias="fuelCodes")
    device_type_codes: list[CodePublic] = Field(alias="deviceTypeCodes")
    sdgs: list[SdgPublic]


# --- meter reads --------------------------------------------------------------------------


class ErrorPublic(_Public):
    code: str
    message: str
    details: dict[str, object]


class ReadWarningPublic(_Public):
    code: str
    message: str
    details: dict[str, object]


class IntervalPublic(_Public):
    start: str
    end: str
    energy_wh: int = Field(alias="energyWh")


class ReadResultPublic(_Public):
    index: int
    status: Literal["accepted", "acceptedWithWarning", "duplicate", "rejected"]
    interval: IntervalPublic | None
    baseline_only: bool | None = Field(default=None, alias="baselineOnly")
    warnings: list[ReadWarningPublic] | None = None
    error: ErrorPublic | None = None


class ReadCounts(_Public):
    accepted: int
    accepted_with_warning: int = Field(alias="acceptedWithWarning")
    duplicate: int
    rejected: int


class ReadsPublic(_Public):
    """200: at least one read was not rejected. The 422 `all_reads_rejected` answer holds
    the same fields beside `error`."""

    external_id: str = Field(alias="externalId")
    submission_id: int = Field(alias="submissionId")
    summary: ReadCounts
    reads: list[ReadResultPublic]


class IntervalsPublic(_Public):
    external_id: str = Field(alias="externalId")
    intervals: list[IntervalPublic]
    total_wh: int = Field(alias="totalWh", description="of this page")
    next_start: str | None = Field(alias="nextStart", description="ask again from here")


# --- reservations -------------------------------------------------------------------------


class StintPublic(_Public):
    device_id: int = Field(alias="deviceId")
    kind: Literal["production", "consumption"]
    added_at: str | None = Field(alias="addedAt")
    released_at: str | None = Field(alias="releasedAt")


class VolumesPublic(_Public):
    issued_wh: int = Field(alias="issuedWh")
    requested_wh: int = Field(alias="requestedWh")
    failed_wh: int = Field(alias="failedWh")
    leftover_wh: int = Field(alias="leftoverWh")


class ReservationPublic(_Public):
    id: int
    organization_id: int = Field(alias="organizationId")
    status: Literal["live", "ended", "completed"]
    devices: list[int] = Field(description="production devices held now")
    consumption_devices: list[int] = Field(alias="consumptionDevices")
    device_history: list[StintPublic] = Field(alias="deviceHistory")
    frequency: str
    start: str | None
    end: str | None
    target_volume_wh: int = Field(alias="targetVolumeWh")
    authority_to_exceed: bool = Field(alias="authorityToExceed")
    wallet: str
    gas_tier: str = Field(alias="gasTier")
    created_at: str | None = Field(alias="createdAt")
    updated_at: str | None = Field(alias="updatedAt")
    ended_at: str | None = Field(alias="endedAt")
    completed_at: str | None = Field(alias="completedAt")
    volumes: VolumesPublic
    matching: MatchingPublic | None = Field(
        default=None, description="present once the matching job has seen the reservation"
    )


class ReservationsPublic(_Public):
    reservations: list[ReservationPublic]
    limit: int
    offset: int


# --- request bodies taken as they are -----------------------------------------------------


def _device_in_schema() -> dict[str, Any]:
    """The JSON schema /docs shows for one device of `POST /devices`: the request names of
    `domain.devices.COLUMNS`, typed as `DevicePublic` answers them. Documentation only:
    the route takes the body as it is and answers each entry (the D-REC file's own
    spellings, a code's list of valid ones), which a schema check up front would lose."""
    answered = DevicePublic.model_json_schema(by_alias=True)["properties"]
    loose = {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]}
    properties = {
        name: loose if name in ("SDGBenefits", "images") else answered.get(name, {})
        for name in COLUMNS
    }
    return {
        "type": "object",
        "title": "DeviceIn",
        "properties": properties,
        "required": list(REQUIRED),
        "additionalProperties": False,
    }


DEVICE_IN_SCHEMA = _device_in_schema()
DEVICES_IN_SCHEMA: dict[str, Any] = {
    "anyOf": [DEVICE_IN_SCHEMA, {"type": "array", "items": DEVICE_IN_SCHEMA}]
}
DEVICE_GROUP_IN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "DeviceGroupIn",
    "properties": {
        "deviceGrpId": {"type": "string"},
        "name": {"type": "string"},
        "SDGBenefits": {
            "anyOf": [
                {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]}},
                {"type": "string"},
            ],
            "description": "goal numbers (7), `SDG7` or names; a list or one text",
        },
        "impactStory": {"type": "string"},
        "images": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
    },
    "required": ["deviceGrpId", "name"],
    "additionalProperties": False,
}
