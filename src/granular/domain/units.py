"""Energy units and timestamps, converted exactly.

Energy is an `int` of Wh. A value in Wh, kWh or MWh is converted with decimal
arithmetic; a result that is not a whole number of Wh is an error, never a rounding.
Timestamps must carry a time zone and are normalised to UTC; a naive timestamp is an
error, never assumed to be UTC.

Every error here carries `details`, a flat mapping of the offending field, value and
rule, so an API can render it without parsing the message.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from granular.errors import ValidationError

# Largest energy value accepted anywhere: fits a signed 64-bit column (and the
# contract's uint64 quantity). 9.2e18 Wh is about 9 EWh, far beyond any meter.
MAX_WH = 2**63 - 1


class RuleViolation(ValidationError):
    """A value broke a domain rule. `details` names the field, the value and the rule."""

    code = "rule_violation"

    def __init__(self, message: str, details: Mapping[str, object]) -> None:
        super().__init__(message, details)


class InvalidNumber(RuleViolation):
    code = "invalid_number"

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(
            f"{field}: {value!r} is not an exact decimal number ({reason})",
            {"field": field, "value": repr(value), "reason": reason},
        )
        self.field = field
        self.value = value


class NegativeValue(RuleViolation):
    code = "negative_value"

    def __init__(self, field: str, value: object) -> None:
        super().__init__(
            f"{field}: {value} is negative; energy values must be >= 0",
            {"field": field, "value": str(value)},
        )
        self.field = field
        self.value = value


class ValueTooLarge(RuleViolation):
    code = "value_too_large"

    def __init__(self, field: str, value: object, max_wh: int) -> None:
        super().__init__(
            f"{field}: {value} exceeds the largest accepted energy of {max_wh} Wh",
            {"field": field, "value": str(value), "max_wh": max_wh},
        )
        self.field = field
        self.value = value
        self.max_wh = max_wh


class FractionalWh(RuleViolation):
    code = "fractional_wh"

    def __init__(self, field: str, value: object, unit: str) -> None:
        super().__init__(
            f"{field}: {value} {unit} is not a whole number of Wh; fractions are refused, "
            "not rounded",
            {"field": field, "value": str(value), "unit": unit},
        )
        self.field = field
        self.value = value
        self.unit = unit


class UnknownUnit(RuleViolation):
    code = "unknown_unit"

    def __init__(self, unit: object) -> None:
        allowed = ", ".join(u.value for u in EnergyUnit)
        super().__init__(
            f"unit: {unit!r} is not one of {allowed}",
            {"field": "unit", "value": repr(unit), "allowed": allowed},
        )
        self.unit = unit


class NaiveTimestamp(RuleViolation):
    code = "naive_timestamp"

    def __init__(self, field: str, value: datetime) -> None:
        super().__init__(
            f"{field}: {value.isoformat()} has no time zone; timestamps must carry one",
            {"field": field, "value": value.isoformat()},
        )
        self.field = field
        self.value = value


class TimestampOutOfRange(RuleViolation):
    code = "timestamp_out_of_range"

    def __init__(self, field: str, value: datetime) -> None:
        super().__init__(
            f"{field}: {value.isoformat()} lies outside the years 1-9999 once moved to UTC",
            {"field": field, "value": value.isoformat()},
        )
        self.field = field
        self.value = value


class EnergyUnit(StrEnum):
    """Units a meter read may be given in; the value is the D-REC API spelling."""

    WH = "Wh"
    KWH = "kWh"
    MWH = "MWh"

    @property
    def exponent(self) -> int:
        """Power of ten from this unit to Wh."""
        return _EXPONENTS[self]


_EXPONENTS = {EnergyUnit.WH: 0, EnergyUnit.KWH: 3, EnergyUnit.MWH: 6}


def parse_unit(unit: EnergyUnit | str) -> EnergyUnit:
    """`EnergyUnit` from its exact spelling ("Wh", "kWh", "MWh")."""
    if isinstance(unit, EnergyUnit):
        return unit
    try:
        return EnergyUnit(unit)
    except ValueError:
        raise UnknownUnit(unit) from None


def to_wh(
    value: Decimal | int | str, unit: EnergyUnit | str = EnergyUnit.WH, *, field: str = "value"
) -> int:
    """Convert `value` in `unit` to an exact integer of Wh.

    Accepts `int`, `Decimal` or a decimal string. Floats are refused (they are not exact;
    parse JSON numbers as `Decimal`). Negative values, NaN/infinity, fractions of a Wh and
    values above `MAX_WH` raise a `RuleViolation` naming `field`.
    """
    energy_unit = parse_unit(unit)
    number = _to_decimal(value, field)
    if number.is_signed() and number != 0:
        raise NegativeValue(field, value)
    if number == 0:
        return 0
    if number.adjusted() + energy_unit.exponent > 19:  # surely above MAX_WH, avoid a huge int
        raise ValueTooLarge(field, value, MAX_WH)
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite: checked in _to_decimal
    # Trailing zeros move into the exponent: "1.000…0" with a million zeros is 1, and the
    # coefficient left is at most 20 digits once the value is whole (checked above), never
    # a string of digits too long for int().
    significant = len(digits)
    while digits[significant - 1] == 0:  # number != 0: a non-zero digit exists
        significant -= 1
    exponent += energy_unit.exponent + len(digits) - significant
    if exponent < 0:  # the last significant digit lies after the decimal point
        raise FractionalWh(field, value, energy_unit.value)
    energy_wh: int = int("".join(map(str, digits[:significant]))) * 10**exponent
    if energy_wh > MAX_WH:
        raise ValueTooLarge(field, value, MAX_WH)
    return energy_wh


def _to_decimal(value: object, field: str) -> Decimal:
    if isinstance(value, bool):
        raise InvalidNumber(field, value, "a boolean is not a number")
    if isinstance(value, float):
        raise InvalidNumber(field, value, "floats are inexact; pass a Decimal, int or string")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidNumber(field, value, "not a decimal string") from None
    else:
        raise InvalidNumber(field, value, f"unsupported type {type(value).__name__}")
    if not number.is_finite():
        raise InvalidNumber(field, value, "not finite")
    return number


def to_utc(value: datetime, *, field: str = "timestamp") -> datetime:
    """`value` in UTC. A naive datetime raises `NaiveTimestamp`; one that UTC cannot hold
    (0001-01-01T00:00+01:00, 9999-12-31T23:00-05:00) raises `TimestampOutOfRange`."""
    if value.tzinfo is UTC:  # the common case, and the cheapest check
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveTimestamp(field, value)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise TimestampOutOfRange(field, value) from None


def shift_months(value: datetime, months: int) -> datetime:
    """`value` moved by whole calendar `months` (negative: back), keeping the time of day.

    The day is clamped to the target month's length: 31 March − 1 month = 28/29 February,
    29 February 2024 − 12 months = 28 February 2023.
    """
    index = value.year * 12 + (value.month - 1) + months
    year, month0 = divmod(index, 12)
    month = month0 + 1
    day = min(value.day, calendar.monthrange(year, month)[1])
    return value.replace(year=year, month=month, day=day)
