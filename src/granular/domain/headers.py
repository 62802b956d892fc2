"""Certificate headers: canonical JSON off-chain, its keccak256 on-chain (DESIGN.md §2, §7).

The header is the whole certificate an auditor checks. Its canonical form is UTF-8 JSON
with sorted keys, no spaces, integers as integers and no floats (a float has no single
spelling); `data_hash` is keccak256 of exactly those bytes, the `dataHash` the registry's
`CertificateIssued` event carries. Anyone verifies a certificate by hashing the header the
API serves and comparing with the chain's event.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from eth_hash.auto import keccak

from granular.errors import ValidationError


class HeaderNotCanonical(ValidationError):
    """A header value has no canonical spelling (a float, or a key that is not a string)."""

    code = "header_not_canonical"

    def __init__(self, path: str, value: object, rule: str) -> None:
        super().__init__(
            f"header field {path}={value!r} breaks the rule: {rule}",
            {"field": path, "value": repr(value), "rule": rule},
        )


def _check(value: Any, path: str) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return
    if isinstance(value, float):
        raise HeaderNotCanonical(path, value, "integers only (a float has no canonical form)")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise HeaderNotCanonical(path, key, "object keys are strings")
            _check(item, f"{path}.{key}" if path else key)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")
        return
    raise HeaderNotCanonical(path, value, "JSON values only: object, list, str, int, bool, null")


def canonical_json(header: Mapping[str, Any]) -> bytes:
    """The one byte spelling of a header: sorted keys, no spaces, UTF-8, integers as is."""
    _check(header, "")
    return json.dumps(
        header, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def data_hash(canonical: bytes) -> bytes:
    """keccak256 of the canonical bytes: the registry's 32-byte `dataHash`."""
    digest: bytes = keccak(canonical)
    return digest


def data_hash_hex(canonical: bytes) -> str:
    """`data_hash` as 0x-prefixed lower-case hex, the form stored and served."""
    return "0x" + data_hash(canonical).hex()
