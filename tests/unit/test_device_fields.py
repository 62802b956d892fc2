"""Device fields at their edges, and the storage helpers that keep values as received."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from granular.adapters.db import readings
from granular.adapters.db.base import as_utc
from granular.domain.devices import DeviceFieldInvalid, parse_device

NOW = datetime(2026, 6, 15, tzinfo=UTC)


def raw(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "externalId": "site-1",
        "countryCode": "KEN",
        "fuelCode": "ES100",
        "deviceTypeCode": "TC110",
        "capacity": 5000,
        "commissioningDate": "2024-03-01",
        "gridInterconnection": True,
        "offTaker": "School",
    }
    fields.update(overrides)
    return fields


@pytest.mark.parametrize("field", ["latitude", "longitude", "yieldValue"])
@pytest.mark.parametrize("value", ["NaN", "sNaN", "-NaN", Decimal("NaN")], ids=str)
def test_nan_is_refused_naming_the_field(field: str, value: object) -> None:
    """Ordering a NaN raised decimal.InvalidOperation: a 500 for one bad cell."""
    with pytest.raises(DeviceFieldInvalid) as refused:
        parse_device(raw(**{field: value}), now=NOW)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("-1.29206594", Decimal("-1.292066")),
        ("36.8219465", Decimal("36.821946")),  # half to even
        ("36.8219475", Decimal("36.821948")),
        ("90", Decimal("90.000000")),
        (Decimal("-0.0917"), Decimal("-0.091700")),
    ],
    ids=["8-places", "half-even-down", "half-even-up", "bound", "4-places"],
)
def test_coordinates_are_rounded_to_the_6_places_stored(given: object, stored: Decimal) -> None:
    spec = parse_device(raw(latitude=given), now=NOW)
    assert spec.latitude == stored
    assert str(spec.latitude) == str(stored)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [("8760", True), ("8760.0001", False), ("0.0001", True), ("0.00009", False)],
    ids=["max", "1-over-max", "smallest", "5-places"],
)
def test_yield_bounds_and_places(value: str, accepted: bool) -> None:
    if accepted:
        assert parse_device(raw(yieldValue=value), now=NOW).yield_kwh_per_kw_year == Decimal(value)
        return
    with pytest.raises(DeviceFieldInvalid) as refused:
        parse_device(raw(yieldValue=value), now=NOW)
    assert refused.value.field == "yieldValue"


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00"], ids=["below", "above"]
)
def test_a_commissioning_date_utc_cannot_hold_is_refused(value: str) -> None:
    with pytest.raises(DeviceFieldInvalid) as refused:
        parse_device(raw(commissioningDate=value), now=NOW)
    assert refused.value.field == "commissioningDate"


def test_stored_instants_come_back_in_utc_whatever_the_session_zone() -> None:
    """PostgreSQL returns timestamptz in the session's zone; the API promises UTC."""
    helper = as_utc
    new_york = datetime(2026, 6, 30, 20, tzinfo=ZoneInfo("America/New_York"))
    assert helper(new_york).tzinfo is UTC
    assert helper(new_york) == datetime(2026, 7, 1, tzinfo=UTC)
    assert helper(datetime(2026, 7, 1)) == datetime(2026, 7, 1, tzinfo=UTC)  # SQLite: naive
    plus_two = datetime(2026, 7, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert helper(plus_two).isoformat() == "2026-07-01T00:00:00+00:00"


def test_a_body_is_stored_digit_for_digit() -> None:
    body = {
        "type": "history",
        "reads": [
            {"value": Decimal("10.5")},
            {"value": Decimal("1234.0000000000001")},
            {"value": Decimal("1E+400")},
            {"value": 7},
        ],
    }
    assert readings._as_received(body) == {
        "type": "history",
        "reads": [
            {"value": 10.5},
            {"value": "1234.0000000000001"},
            {"value": "1E+400"},
            {"value": 7},
        ],
    }
