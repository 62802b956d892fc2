"""Compile the Solidity contracts with py-solc-x's `compile_standard`.

Every source, the OpenZeppelin imports included, is read here and put in the standard JSON
input, so the compiler never touches the file system and the sha256 of that input pins
exactly what was compiled. The compiler is, in this order: `SOLC_BINARY`; a py-solc-x
installed solc of the pinned version; solc-js from `node_modules` through
`scripts/solcjs-shim.cjs`. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import solcx
from packaging.version import Version

from granular.errors import ConfigurationError, GranularError

SOLC_VERSION = "0.8.30"
DEFAULT_EVM_VERSION = "paris"
OPTIMIZER_RUNS = 200
# Contracts that get an artifact: (source unit, contract name).
CONTRACTS: tuple[tuple[str, str], ...] = (
    ("contracts/CertificateRegistry.sol", "CertificateRegistry"),
    ("contracts/GranularForwarder.sol", "GranularForwarder"),
)

_IMPORT = re.compile(r'^\s*import\s+(?:[^"\';]*?\s+from\s+)?["\']([^"\']+)["\']', re.MULTILINE)


class CompilationFailed(GranularError):
    code = "compilation_failed"


@dataclass(frozen=True, slots=True)
class Compiler:
    path: Path
    source: str  # "SOLC_BINARY", "py-solc-x" or "solc-js"
    version: str


def collect_sources(root: Path, entries: list[str]) -> dict[str, str]:
    """Source unit name → content for `entries` and everything they import, transitively.

    Relative imports resolve against the importing unit; `@openzeppelin/...` resolves in
    `node_modules`.
    """
    sources: dict[str, str] = {}
    pending = list(entries)
    while pending:
        unit = pending.pop()
        if unit in sources:
            continue
        file = root / "node_modules" / unit if unit.startswith("@") else root / unit
        if not file.is_file():
            raise CompilationFailed(f"source {unit!r} not found at {file}; run `npm ci` first")
        content = file.read_text(encoding="utf-8")
        sources[unit] = content
        for target in _IMPORT.findall(content):
            if target.startswith("."):
                target = posixpath.normpath(posixpath.join(posixpath.dirname(unit), target))
            pending.append(target)
    return dict(sorted(sources.items()))


def sources_sha256(sources: dict[str, str]) -> str:
    canonical = json.dumps(sources, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def settings(evm_version: str = DEFAULT_EVM_VERSION) -> dict[str, Any]:
    return {
        "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
        "evmVersion": evm_version,
        "outputSelection": {
            "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}
        },
    }


def resolve_compiler(root: Path) -> Compiler:
    env = os.environ.get("SOLC_BINARY")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigurationError(f"SOLC_BINARY={env} is not a file")
        return Compiler(path, "SOLC_BINARY", str(solcx.wrapper.get_solc_version(path)))
    pinned = Version(SOLC_VERSION)
    if pinned in solcx.get_installed_solc_versions():
        return Compiler(solcx.install.get_executable(pinned), "py-solc-x", SOLC_VERSION)
    shim = root / "scripts" / "solcjs-shim.cjs"
    if shutil.which("node") is None or not (root / "node_modules" / "solc").is_dir():
        raise ConfigurationError(
            "no Solidity compiler: set SOLC_BINARY, or run `npm ci` so solc-js is in node_modules"
        )
    return Compiler(shim, "solc-js", str(solcx.wrapper.get_solc_version(shim)))


def compile_contracts(
    root: Path, *, evm_version: str = DEFAULT_EVM_VERSION
) -> dict[str, dict[str, Any]]:
    """Compile and return one artifact (a JSON-able dict) per contract in CONTRACTS."""
    compiler = resolve_compiler(root)
    if compiler.version != SOLC_VERSION:
        raise ConfigurationError(
            f"solc {compiler.version} from {compiler.source}; the pinned version is {SOLC_VERSION}"
        )
    sources = collect_sources(root, [unit for unit, _ in CONTRACTS])
    the_settings = settings(evm_version)
    standard = {
        "language": "Solidity",
        "sources": {unit: {"content": content} for unit, content in sources.items()},
        "settings": the_settings,
    }
    try:
        output = solcx.compile_standard(standard, solc_binary=compiler.path)
    except solcx.exceptions.SolcError as error:
        raise CompilationFailed(str(error).strip().splitlines()[0]) from error
    digest = sources_sha256(sources)
    artifacts: dict[str, dict[str, Any]] = {}
    for unit, name in CONTRACTS:
        contract = output["contracts"][unit][name]
        artifacts[name] = {
            "contractName": name,
            "sourceName": unit,
            "abi": contract["abi"],
            "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
            "compiler": {"version": SOLC_VERSION, "settings": the_settings},
            "sourcesSha256": digest,
        }
    return artifacts


def write_artifacts(artifacts: dict[str, dict[str, Any]], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, artifact in artifacts.items():
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(artifact, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
