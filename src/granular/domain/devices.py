"""Devices as device owners register them: the D-REC columns, checked field by field.

One device is a row of the bulk CSV or one JSON object; both go through `parse_device`, so
the same field gets the same rule and the same error whichever way it arrives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from granular.domain.units import RuleViolation


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
        latitude=coordinate("latitude", 90),
        longitude=coordinate("longitude", 180),
        description=None
        if _blank(description)
        else _text("description", description, max_length=2000),
        kind=_kind(raw.get("kind")),
    )
