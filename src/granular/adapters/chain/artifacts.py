"""Compiled contract artifacts (contracts/build/<Name>.json) and custom-error decoding."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address

from granular.errors import ConfigurationError
from granular.paths import artifacts_dir


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    sha256: str  # of the artifact file's bytes, as committed

    @classmethod
    def load(cls, name: str, directory: Path | None = None) -> Artifact:
        path = (directory or artifacts_dir()) / f"{name}.json"
        try:
            raw = path.read_bytes()
        except OSError:
            raise ConfigurationError(
                f"artifact {path} is missing; run `python scripts/compile_contracts.py`"
            ) from None
        data = json.loads(raw)
        return cls(
            name=name,
            abi=data["abi"],
            bytecode=data["bytecode"],
            deployed_bytecode=data["deployedBytecode"],
            sha256=hashlib.sha256(raw).hexdigest(),
        )


@dataclass(frozen=True, slots=True)
class DecodedError:
    name: str
    args: tuple[Any, ...]

    def __str__(self) -> str:
        return f"{self.name}({', '.join(map(str, self.args))})"


def _signature(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(_abi_type(i) for i in entry['inputs'])})"


def _abi_type(param: dict[str, Any]) -> str:
    kind: str = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in param["components"]) + ")" + kind[5:]
    return kind


class ErrorDecoder:
    """Turns revert data into the contract's custom error, its name and arguments."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._by_selector: dict[bytes, tuple[str, list[str]]] = {}
        for entry in abi:
            if entry.get("type") == "error":
                selector = function_signature_to_4byte_selector(_signature(entry))
                types = [_abi_type(i) for i in entry["inputs"]]
                self._by_selector[selector] = (entry["name"], types)

    def decode(self, data: bytes | str) -> DecodedError | None:
        raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else data
        found = self._by_selector.get(raw[:4])
        if found is None:
            return None
        name, types = found
        values = abi_decode(types, raw[4:])
        return DecodedError(
            name,
            tuple(
                to_checksum_address(v) if t == "address" else v
                for t, v in zip(types, values, strict=True)
            ),
        )
