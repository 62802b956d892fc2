"""One address check for every input address: EIP-55 checksums refused when wrong, never
repaired; the outbox, deployments and reservations all use it."""

from __future__ import annotations

import pytest
from eth_utils.address import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from granular.domain.addresses import (
    CHECKSUM_RULE,
    FORMAT_RULE,
    InvalidAddress,
    checksum_address,
    to_checksum,
)
from granular.services.deployment import checked_address
from granular.services.reservations import InvalidWallet, checksum_wallet

GOOD = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # the EIP-55 specification's example
TYPO = GOOD[:-1] + "D"  # one letter in the wrong case


@given(st.binary(min_size=20, max_size=20))
def test_the_checksum_is_eth_utils_spelling(raw: bytes) -> None:
    address = "0x" + raw.hex()
    assert to_checksum(address) == to_checksum_address(address)
    assert checksum_address("to", address.upper().replace("0X", "0x")) == to_checksum(address)


@pytest.mark.parametrize(
    "value", [GOOD, GOOD.lower(), "0x" + GOOD[2:].upper()], ids=["checksummed", "lower", "upper"]
)
def test_a_valid_address_comes_back_checksummed(value: str) -> None:
    assert checksum_address("to", value) == GOOD


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (TYPO, CHECKSUM_RULE),
        (GOOD[2:], FORMAT_RULE),
        (GOOD[:-1], FORMAT_RULE),
        ("0x" + "g" * 40, FORMAT_RULE),
        ("", FORMAT_RULE),
    ],
    ids=["bad checksum", "no 0x", "39 digits", "not hex", "empty"],
)
def test_a_bad_address_is_refused_with_its_rule(value: str, rule: str) -> None:
    with pytest.raises(InvalidAddress) as raised:
        checksum_address("signer", value)
    assert raised.value.code == "invalid_address"
    assert raised.value.details == {"field": "signer", "value": value, "rule": rule}


def test_every_caller_refuses_a_bad_checksum_instead_of_repairing_it() -> None:
    with pytest.raises(InvalidAddress, match="--issuer"):
        checked_address("--issuer", TYPO)
    with pytest.raises(InvalidWallet, match="EIP-55"):
        checksum_wallet(TYPO)
    assert checked_address("--issuer", GOOD.lower()) == checksum_wallet(GOOD.lower()) == GOOD
