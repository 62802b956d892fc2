"""Which solc the compile step uses: SOLC_BINARY, then py-solc-x's, then solc-js."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from granular.adapters.chain.compiler import resolve_compiler
from granular.errors import ConfigurationError
from granular.paths import project_root

ROOT = project_root()
SHIM = ROOT / "scripts" / "solcjs-shim.cjs"


@pytest.fixture
def no_native(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SOLC_BINARY and an empty py-solc-x install folder."""
    monkeypatch.delenv("SOLC_BINARY", raising=False)
    folder = tmp_path / "solcx"
    folder.mkdir()
    monkeypatch.setenv("SOLCX_BINARY_PATH", str(folder))
    return folder


def test_falls_back_to_solc_js_through_the_shim(no_native: Path) -> None:
    compiler = resolve_compiler(ROOT)
    assert (compiler.source, compiler.path, compiler.version) == ("solc-js", SHIM, "0.8.30")


def test_prefers_a_py_solc_x_install_of_the_pinned_version(no_native: Path) -> None:
    installed = no_native / "solc-v0.8.30"
    os.symlink(SHIM, installed)
    (no_native / "solc-v0.8.29").symlink_to(SHIM)  # another version is not picked
    compiler = resolve_compiler(ROOT)
    assert (compiler.source, compiler.path) == ("py-solc-x", installed)


def test_solc_binary_wins_over_everything(no_native: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (no_native / "solc-v0.8.30").symlink_to(SHIM)
    monkeypatch.setenv("SOLC_BINARY", str(SHIM))
    assert resolve_compiler(ROOT).source == "SOLC_BINARY"


def test_solc_binary_that_is_missing_is_a_clear_error(
    no_native: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SOLC_BINARY", str(tmp_path / "nope"))
    with pytest.raises(ConfigurationError, match="SOLC_BINARY=.*nope is not a file"):
        resolve_compiler(ROOT)


def test_the_shim_refuses_what_it_does_not_implement() -> None:
    import subprocess

    result = subprocess.run([str(SHIM), "--bin", "x.sol"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "only --version and --standard-json" in result.stderr
