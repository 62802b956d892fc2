"""Devices as device owners register them: the D-REC columns, checked field by field.

One device is a row of the bulk CSV or one JSON object; both go through `parse_device`, so
the same field gets the same rule and the same error whichever way it arrives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from granular.domain.units import RuleViolation

EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
COUNTRY_CODE = re.compile(r"^[A-Z]{2,3}$")
CODE = re.compile(r"^[A-Z]{1,4}[0-9]{0,6}$")
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
}
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


class DeviceFieldInvalid(RuleViolation):
    code = "device_field_invalid"

    def __init__(self, field: str, value: object, rule: str) -> None:
        super().__init__(
            f"{field}: {value!r} {rule}", {"field": field, "value": value, "rule": rule}
        )
        self.field = field
        self.value = value
        self.rule = rule


class UnknownDeviceField(DeviceFieldInvalid):
    code = "unknown_device_field"

    def __init__(self, field: str) -> None:
        super().__init__(field, None, f"is not a device field; known: {', '.join(COLUMNS)}")


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

    def as_columns(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _text(field: str, value: object, *, max_length: int = 200) -> str:
    if not isinstance(value, str):
        raise DeviceFieldInvalid(field, value, "must be text")
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


def _decimal(field: str, value: object, low: Decimal, high: Decimal, *, open_low: bool) -> Decimal:
    try:  # str() keeps a JSON float's printed digits; a bool is not a number here
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise DeviceFieldInvalid(field, value, "must be a decimal number") from None
    inside = (number > low if open_low else number >= low) and number <= high
    if not number.is_finite() or not inside:
        bracket = "(" if open_low else "["
        raise DeviceFieldInvalid(field, value, f"must lie in {bracket}{low}, {high}]")
    return number


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
    moment = moment.astimezone(UTC)
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

    def optional_decimal(name: str, low: Decimal, high: Decimal, open_low: bool) -> Decimal | None:
        value = raw.get(name)
        return None if _blank(value) else _decimal(name, value, low, high, open_low=open_low)

    yield_value = optional_decimal("yieldValue", Decimal(0), Decimal(8760), True)
    project = raw.get("projectName")
    description = raw.get("description")
    return DeviceSpec(
        external_id=_matching(
            "externalId", raw["externalId"], EXTERNAL_ID, "must be 1-64 letters, digits, - or _"
        ),
        country_code=_matching(
            "countryCode", raw["countryCode"], COUNTRY_CODE, "must be an ISO 3166-1 code"
        ),
        fuel_code=_matching("fuelCode", raw["fuelCode"], CODE, "must be an I-REC fuel code"),
        device_type_code=_matching(
            "deviceTypeCode", raw["deviceTypeCode"], CODE, "must be an I-REC device type code"
        ),
        capacity_w=_capacity(raw["capacity"]),
        commissioning_date=_commissioning(raw["commissioningDate"], now),
        grid_interconnection=_bool("gridInterconnection", raw["gridInterconnection"]),
        off_taker=off_taker,
        project_name=None if _blank(project) else _text("projectName", project),
        yield_kwh_per_kw_year=yield_value or DEFAULT_YIELD_KWH_PER_KW_YEAR,
        latitude=optional_decimal("latitude", Decimal(-90), Decimal(90), False),
        longitude=optional_decimal("longitude", Decimal(-180), Decimal(180), False),
        description=None
        if _blank(description)
        else _text("description", description, max_length=2000),
    )
