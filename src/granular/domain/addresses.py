"""EVM addresses: the one check every input address goes through (EIP-55).

`0x` and 40 hex digits; all-lower or all-upper hex carries no checksum and is accepted;
mixed case must be a correct EIP-55 checksum, so a typo is refused, never repaired. The
result is the checksummed spelling, so one address is always stored the same way.
"""

from __future__ import annotations

import re

from eth_hash.auto import keccak

from granular.errors import FieldRuleError, ValidationError

_HEX_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
FORMAT_RULE = "expected 0x followed by 40 hex digits"
CHECKSUM_RULE = "mixed-case address with a wrong EIP-55 checksum"


class InvalidAddress(FieldRuleError, ValidationError):
    code = "invalid_address"

    def __init__(self, field: str, value: str, rule: str) -> None:
        super().__init__(
            field, value, rule, message=f"{field}: {value!r} is not a 20-byte hex address ({rule})"
        )


def to_checksum(hex_address: str) -> str:
    """The EIP-55 spelling of `0x` + 40 hex digits (any case)."""
    body = hex_address[2:].lower()
    digest = keccak(body.encode("ascii")).hex()
    return "0x" + "".join(
        c.upper() if int(d, 16) >= 8 else c for c, d in zip(body, digest[:40], strict=True)
    )


def address_problem(value: str) -> str | None:
    """The rule `value` breaks as an address, or None when it is one."""
    if not _HEX_ADDRESS.match(value):
        return FORMAT_RULE
    body = value[2:]
    mixed = body != body.lower() and body != body.upper()
    if mixed and to_checksum(value) != value:
        return CHECKSUM_RULE
    return None


def checksum_address(field: str, value: str) -> str:
    """`value` checked (see the module) and spelled with its EIP-55 checksum."""
    problem = address_problem(value)
    if problem is not None:
        raise InvalidAddress(field, value, problem)
    return to_checksum(value)
