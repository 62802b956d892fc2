"""`granular run` (what `make run` calls): its own anvil, the registry on it, the record
printed, anvil stopped again."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from granular.cli import main


def test_run_deploys_on_its_own_anvil_and_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRANULAR_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("GRANULAR_DATABASE_URL", f"sqlite:///{tmp_path / 'var' / 'granular.db'}")
    monkeypatch.delenv("GRANULAR_RPC_URL", raising=False)
    assert main(["run"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["chainId"] == 31337
    assert record == json.loads((tmp_path / "var" / "deployments" / "anvil.json").read_text())
    assert (tmp_path / "var" / "granular.db").is_file()  # the schema was migrated
    log = (tmp_path / "var" / "anvil.log").read_text()
    port = int(log.split("Listening on 127.0.0.1:")[1].split()[0])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "anvil is still listening"


def test_run_against_a_chain_without_a_deployment_record_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRANULAR_DATABASE_URL", f"sqlite:///{tmp_path / 'granular.db'}")
    monkeypatch.setenv("GRANULAR_RPC_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("GRANULAR_NETWORK", "nowhere-test")
    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "granular: no deployments/nowhere-test.json; run scripts/deploy.py first"
    )
