"""The committed artifacts in contracts/build are what the sources compile to."""

from __future__ import annotations

import json

import pytest

from granular.adapters.chain.compiler import (
    CONTRACTS,
    collect_sources,
    compile_contracts,
    sources_sha256,
)
from granular.paths import artifacts_dir, project_root

ROOT = project_root()


def _committed(name: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((artifacts_dir(ROOT) / f"{name}.json").read_text())
    return loaded


@pytest.mark.parametrize("name", [name for _, name in CONTRACTS])
def test_committed_artifact_was_built_from_the_current_sources(name: str) -> None:
    sources = collect_sources(ROOT, [unit for unit, _ in CONTRACTS])
    assert _committed(name)["sourcesSha256"] == sources_sha256(
        sources
    ), f"contracts/build/{name}.json is stale: run `python scripts/compile_contracts.py`"


def test_sources_include_openzeppelin_imports_transitively() -> None:
    sources = collect_sources(ROOT, ["contracts/CertificateRegistry.sol"])
    assert "@openzeppelin/contracts/access/AccessControl.sol" in sources
    assert "@openzeppelin/contracts/utils/Context.sol" in sources  # imported by AccessControl
    assert "contracts/ICertificateRegistry.sol" in sources


def test_recompiling_reproduces_the_committed_bytecode() -> None:
    fresh = compile_contracts(ROOT)
    for name, artifact in fresh.items():
        committed = _committed(name)
        assert artifact["bytecode"] == committed["bytecode"], name
        assert artifact["abi"] == committed["abi"], name
        assert committed["compiler"] == {
            "version": "0.8.30",
            "settings": artifact["compiler"]["settings"],
        }
        assert artifact["compiler"]["settings"]["evmVersion"] == "paris"
        assert artifact["compiler"]["settings"]["optimizer"]["enabled"] is True
