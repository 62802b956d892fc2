"""Devices as device owners register them: the D-REC columns, checked field by field.

One device is a row of the bulk CSV or one JSON object; both go through `parse_device`, so
the same field gets the same rule and the same error whichever way it arrives. Every column
of the D-REC device file (`domain/drec.py`) is a device field; `fuelCode` and
`deviceTypeCode` must be I-REC codes of `domain/codes.py`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from granular.domain.codes import DEVICE_TYPE_CODES, FUEL_CODES
from granular.domain.drec import SdgUnknown, sdg_bits, split_list
from granular.domain.units import RuleViolation
from granular.errors import FieldRuleError


class DeviceKind(StrEnum):
    """A production device is a plant; a consumption device is a site's meter, whose
    physical bound is its connection capacity (DESIGN.md §2)."""

    PRODUCTION = "production"
    CONSUMPTION = "consumption"


EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
COUNTRY_CODE = re.compile(r"^[A-Z]{2,3}$")
CODE = re.compile(r"^[A-Z]{1,4}[0-9]{0,6}$")
_UNPAIRED_SURROGATE = re.compile("[\ud800-\udfff]")
OFF_TAKERS = (
    "School",
    "Health Facility",
    "Residential",
    "Commercial",
    "Industrial",
    "Public Sector",
    "Agriculture",
    "Utility",
    "Off-Grid Community",
)
DEFAULT_YIELD_KWH_PER_KW_YEAR = Decimal(1500)
MAX_CAPACITY_W = 10**13  # 10 TW: anything larger is a unit mistake
# Decimal places the storage keeps (adapters/db/devices.py: Numeric(12, 4), Numeric(9, 6)).
# A yield with more is refused (it enters the max-energy rule; no silent rounding there);
# coordinates are rounded to 6 places.
YIELD_PLACES = 4
COORDINATE_PLACES = 6

# API / CSV column → DeviceSpec field.
COLUMNS = {
    "externalId": "external_id",
    "projectName": "project_name",
    "countryCode": "country_code",
    "fuelCode": "fuel_code",
    "deviceTypeCode": "device_type_code",
    "capacity": "capacity_w",
    "commissioningDate": "commissioning_date",
    "gridInterconnection": "grid_interconnection",
    "offTaker": "off_taker",
    "yieldValue": "yield_kwh_per_kw_year",
    "latitude": "latitude",
    "longitude": "longitude",
    "description": "description",
    "kind": "kind",
}
# The columns of the D-REC device file that are not above (DREC_HEADER lists them all).
DREC_COLUMNS = {
    "version": "drec_version",
    "deviceGrpId": "group_external_id",
    "orgId": "drec_org_id",
    "organisationName": "organisation_name",
    "deviceOnBoardedBy": "onboarded_by",
    "deviceOEM": "device_oem",
    "address": "address",
    "postalCode": "postal_code",
    "energyStorage": "energy_storage",
    "energyStorageCapacity": "energy_storage_capacity_wh",
    "qualityLabels": "quality_labels",
    "SDGBenefits": "sdg_benefits",
    "impactStory": "impact_story",
    "images": "images",
}
COLUMNS.update(DREC_COLUMNS)
MAX_IMAGES = 20
MAX_ENERGY_STORAGE_WH = 10**15  # 1 PWh: anything larger is a unit mistake
VERSION = re.compile(r"^[0-9A-Za-z._-]{1,16}$")
REQUIRED = (
    "externalId",
    "countryCode",
    "fuelCode",
    "deviceTypeCode",
    "capacity",
    "commissioningDate",
    "gridInterconnection",
    "offTaker",
)


class DeviceFieldInvalid(FieldRuleError, RuleViolation):
    code = "device_field_invalid"

    def __init__(
        self, field: str, value: object, rule: str, valid: Sequence[str] | None = None
    ) -> None:
        extra: dict[str, object] = {} if valid is None else {"valid": list(valid)}
        super().__init__(field, value, rule, message=f"{field}: {value!r} {rule}", **extra)
        self.valid = None if valid is None else list(valid)


class UnknownDeviceField(DeviceFieldInvalid):
    code = "unknown_device_field"

    def __init__(self, field: str) -> None:
        known = ", ".join(COLUMNS)
        super().__init__(field, None, f"is not a device field; known: {known}", valid=list(COLUMNS))


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    external_id: str
    country_code: str
    fuel_code: str
    device_type_code: str
    capacity_w: int
    commissioning_date: datetime
    grid_interconnection: bool
    off_taker: str
    project_name: str | None = None
    yield_kwh_per_kw_year: Decimal = DEFAULT_YIELD_KWH_PER_KW_YEAR
    latitude: Decimal | None = None
    longitude: Decimal | None = None
    description: str | None = None
    # D-REC fields (DREC_COLUMNS); `group_external_id` is the deviceGrpId of a device group
    # of the same organization, `sdg_benefits` a bit set of domain/drec.py.
    drec_version: str | None = None
    group_external_id: str | None = None
    drec_org_id: str | None = None
    organisation_name: str | None = None
    onboarded_by: str | None = None
    device_oem: str | None = None
    address: str | None = None
    postal_code: str | None = None
    energy_storage: bool | None = None
    energy_storage_capacity_wh: int | None = None
    quality_labels: str | None = None
    sdg_benefits: int = 0
    impact_story: str | None = None
    images: tuple[str, ...] = ()
    kind: DeviceKind = DeviceKind.PRODUCTION

    def as_columns(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _text(field: str, value: object, *, max_length: int = 200) -> str:
    if not isinstance(value, str):
        raise DeviceFieldInvalid(field, value, "must be text")
    if "\x00" in value or (not value.isascii() and _UNPAIRED_SURROGATE.search(value)):
        # PostgreSQL text cannot hold NUL; UTF-8 cannot encode a lone surrogate ("\ud800").
        raise DeviceFieldInvalid(field, value, "contains a NUL character or an unpaired surrogate")
    text = value.strip()
    if len(text) > max_length:
        raise DeviceFieldInvalid(field, value, f"is longer than {max_length} characters")
    return text


def _matching(field: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    text = _text(field, value)
    if not pattern.match(text):
        raise DeviceFieldInvalid(field, value, rule)
    return text


def _capacity(value: object) -> int:
    if isinstance(value, bool):
        raise DeviceFieldInvalid("capacity", value, "must be a whole number of W")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise DeviceFieldInvalid("capacity", value, "must be a whole number of W") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise DeviceFieldInvalid("capacity", value, "must be a whole number of W")
    if not 0 < number <= MAX_CAPACITY_W:
        raise DeviceFieldInvalid("capacity", value, f"must be > 0 and <= {MAX_CAPACITY_W} W")
    return int(number)


def _decimal(
    field: str, value: object, low: Decimal, high: Decimal, *, open_low: bool, places: int | None
) -> Decimal:
    """A number in the range, with at most `places` decimal places when given.

    NaN is refused before any comparison (ordering a NaN raises `InvalidOperation`)."""
    try:  # str() keeps a JSON float's printed digits; a bool is not a number here
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise DeviceFieldInvalid(field, value, "must be a decimal number") from None
    bracket = "(" if open_low else "["
    if not number.is_finite():
        raise DeviceFieldInvalid(field, value, f"must lie in {bracket}{low}, {high}]")
    inside = (number > low if open_low else number >= low) and number <= high
    if not inside:
        raise DeviceFieldInvalid(field, value, f"must lie in {bracket}{low}, {high}]")
    if places is not None and number != number.quantize(Decimal(1).scaleb(-places)):
        raise DeviceFieldInvalid(field, value, f"has more than {places} decimal places")
    return number


def _coordinate(field: str, value: object, limit: int) -> Decimal:
    """Latitude or longitude rounded to 6 decimal places (about 0.1 m), as stored: a GPS
    reading's 7th or 15th digit says nothing, and a re-upload must compare equal."""
    number = _decimal(field, value, Decimal(-limit), Decimal(limit), open_low=False, places=None)
    return number.quantize(Decimal(1).scaleb(-COORDINATE_PLACES), rounding=ROUND_HALF_EVEN)


def _commissioning(value: object, now: datetime) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day, tzinfo=UTC)
    else:
        text = _text("commissioningDate", value)
        try:
            if len(text) == 10:
                moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
            else:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise DeviceFieldInvalid(
                "commissioningDate", value, "must be an ISO 8601 date or date-time"
            ) from None
    if moment.tzinfo is None:
        raise DeviceFieldInvalid(
            "commissioningDate", value, "needs a time zone (or give a plain date, read as UTC)"
        )
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise DeviceFieldInvalid(
            "commissioningDate", value, "lies outside the years 1-9999 once moved to UTC"
        ) from None
    if moment > now:
        raise DeviceFieldInvalid("commissioningDate", value, "is in the future")
    return moment


def _bool(field: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise DeviceFieldInvalid(field, value, "must be true or false")


def _kind(value: object) -> DeviceKind:
    """`kind`: production (the default when blank) or consumption."""
    if _blank(value):
        return DeviceKind.PRODUCTION
    valid = ", ".join(kind.value for kind in DeviceKind)
    if not isinstance(value, str):
        raise DeviceFieldInvalid("kind", value, f"must be one of {valid}")
    try:
        return DeviceKind(_text("kind", value))
    except ValueError:
        raise DeviceFieldInvalid("kind", value, f"must be one of {valid}") from None


def parse_device(raw: Mapping[str, object], *, now: datetime) -> DeviceSpec:
    """A DeviceSpec from D-REC columns, or DeviceFieldInvalid naming field, value and rule."""
    for name in raw:
        if name not in COLUMNS:
            raise UnknownDeviceField(name)
    for name in REQUIRED:
        if _blank(raw.get(name)):
            raise DeviceFieldInvalid(name, raw.get(name), "is required")
    off_taker = _text("offTaker", raw["offTaker"])
    if off_taker not in OFF_TAKERS:
        raise DeviceFieldInvalid("offTaker", off_taker, f"must be one of {', '.join(OFF_TAKERS)}")

    def coordinate(name: str, limit: int) -> Decimal | None:
        value = raw.get(name)
        return None if _blank(value) else _coordinate(name, value, limit)

    raw_yield = raw.get("yieldValue")
    yield_value = (
        None
        if _blank(raw_yield)
        else _decimal(
            "yieldValue", raw_yield, Decimal(0), Decimal(8760), open_low=True, places=YIELD_PLACES
        )
    )
    project = raw.get("projectName")
    description = raw.get("description")
    return DeviceSpec(
        external_id=_matching(
            "externalId", raw["externalId"], EXTERNAL_ID, "must be 1-64 letters, digits, - or _"
        ),
        country_code=_matching(
            "countryCode", raw["countryCode"], COUNTRY_CODE, "must be an ISO 3166-1 code"
        ),
        fuel_code=_code("fuelCode", raw["fuelCode"], FUEL_CODES, "fuel"),
        device_type_code=_code(
            "deviceTypeCode", raw["deviceTypeCode"], DEVICE_TYPE_CODES, "device type"
        ),
        capacity_w=_capacity(raw["capacity"]),
        commissioning_date=_commissioning(raw["commissioningDate"], now),
        grid_interconnection=_bool("gridInterconnection", raw["gridInterconnection"]),
        off_taker=off_taker,
        project_name=None if _blank(project) else _text("projectName", project),
        yield_kwh_per_kw_year=yield_value or DEFAULT_YIELD_KWH_PER_KW_YEAR,
        latitude=coordinate("latitude", 90),
        longitude=coordinate("longitude", 180),
        description=None
        if _blank(description)
        else _text("description", description, max_length=2000),
        **drec_fields(raw),
        kind=_kind(raw.get("kind")),
    )


def _code(field: str, value: object, known: Mapping[str, str], kind: str) -> str:
    """An I-REC code of `known` (GET /codes lists them); upper case is not required."""
    text = _text(field, value).upper()
    if text not in known:
        rule = f"is not an I-REC {kind} code; GET /codes lists them"
        raise DeviceFieldInvalid(field, value, rule, valid=list(known))
    return text


def _optional_text(raw: Mapping[str, object], field: str, max_length: int) -> str | None:
    value = raw.get(field)
    if _blank(value):
        return None
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        value = str(value)  # a D-REC orgId or postal code written as a JSON number
    return _text(field, value, max_length=max_length) or None


def parse_images(field: str, value: object) -> tuple[str, ...]:
    """Image references (URLs or file names): a JSON list or one cell of `a.jpg; b.jpg`."""
    if _blank(value):
        return ()
    parts = split_list(value)
    if parts is None:
        raise DeviceFieldInvalid(field, value, "must be a list of texts or one text of them")
    if len(parts) > MAX_IMAGES:
        raise DeviceFieldInvalid(field, value, f"holds more than {MAX_IMAGES} images")
    return tuple(_text(field, part, max_length=500) for part in parts)


def parse_sdg_benefits(field: str, value: object) -> int:
    """The bit set of the goals named (domain/drec.py); 0 when blank."""
    if isinstance(value, str) and _blank(value):
        return 0
    try:
        return sdg_bits(value)
    except SdgUnknown as unknown:
        rule = f"names no SDG ({unknown.token}); use 1-17, SDG1-SDG17 or a goal's name"
        raise DeviceFieldInvalid(field, value, rule) from None


def drec_fields(raw: Mapping[str, object]) -> dict[str, Any]:
    """The D-REC fields of `raw` as DeviceSpec keyword arguments, each checked."""
    version = _optional_text(raw, "version", 16)
    if version is not None and not VERSION.match(version):
        raise DeviceFieldInvalid("version", raw["version"], "must be a version like 1.0")
    group = raw.get("deviceGrpId")
    storage = raw.get("energyStorage")
    has_storage = None if _blank(storage) else _bool("energyStorage", storage)
    storage_wh_raw = raw.get("energyStorageCapacity")
    storage_wh = (
        None
        if _blank(storage_wh_raw)
        else _whole("energyStorageCapacity", storage_wh_raw, "Wh", MAX_ENERGY_STORAGE_WH)
    )
    if storage_wh and has_storage is False:
        raise DeviceFieldInvalid(
            "energyStorageCapacity", storage_wh_raw, "is given but energyStorage is false"
        )
    return {
        "drec_version": version,
        "group_external_id": None
        if _blank(group)
        else _matching("deviceGrpId", group, EXTERNAL_ID, "must be 1-64 letters, digits, - or _"),
        "drec_org_id": _optional_text(raw, "orgId", 64),
        "organisation_name": _optional_text(raw, "organisationName", 200),
        "onboarded_by": _optional_text(raw, "deviceOnBoardedBy", 200),
        "device_oem": _optional_text(raw, "deviceOEM", 200),
        "address": _optional_text(raw, "address", 500),
        "postal_code": _optional_text(raw, "postalCode", 32),
        "energy_storage": has_storage,
        "energy_storage_capacity_wh": storage_wh,
        "quality_labels": _optional_text(raw, "qualityLabels", 500),
        "sdg_benefits": parse_sdg_benefits("SDGBenefits", raw.get("SDGBenefits")),
        "impact_story": _optional_text(raw, "impactStory", 4000),
        "images": parse_images("images", raw.get("images")),
    }


def _whole(field: str, value: object, unit: str, maximum: int) -> int:
    """A whole number of `unit` in [0, maximum]."""
    rule = f"must be a whole number of {unit} in [0, {maximum}]"
    if isinstance(value, bool):
        raise DeviceFieldInvalid(field, value, rule)
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise DeviceFieldInvalid(field, value, rule) from None
    if not number.is_finite() or number != number.to_integral_value():
        raise DeviceFieldInvalid(field, value, rule)
    if not 0 <= number <= maximum:
        raise DeviceFieldInvalid(field, value, rule)
    return int(number)
