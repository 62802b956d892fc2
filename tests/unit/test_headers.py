from __future__ import annotations

import pytest

from granular.domain.headers import (
    HeaderNotCanonical,
    canonical_json,
    data_hash,
    data_hash_hex,
)


def test_canonical_json_sorts_keys_without_spaces_and_keeps_integers() -> None:
    header = {"quantity": 1500, "kind": "production", "b": [2, 1], "a": {"z": True, "y": None}}
    assert canonical_json(header) == (
        b'{"a":{"y":null,"z":true},"b":[2,1],"kind":"production","quantity":1500}'
    )


def test_key_order_of_the_input_does_not_change_the_hash() -> None:
    first = canonical_json({"a": 1, "b": "é"})
    second = canonical_json({"b": "é", "a": 1})
    assert first == second
    assert data_hash(first) == data_hash(second)


def test_data_hash_is_keccak256_of_the_bytes() -> None:
    # keccak256 of the empty string, the well-known constant.
    assert data_hash(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )
    assert data_hash_hex(b"") == "0x" + data_hash(b"").hex()


def test_one_changed_field_changes_the_hash() -> None:
    assert data_hash(canonical_json({"quantity": 1500})) != data_hash(
        canonical_json({"quantity": 1501})
    )


@pytest.mark.parametrize(
    ("header", "field"),
    [({"quantity": 1.5}, "quantity"), ({"a": {"b": [1, 2.0]}}, "a.b[1]"), ({"a": {1: 2}}, "a")],
    ids=["float", "nested-float", "non-string-key"],
)
def test_values_without_a_canonical_spelling_are_refused(header: dict, field: str) -> None:
    with pytest.raises(HeaderNotCanonical) as error:
        canonical_json(header)
    assert error.value.details["field"] == field
