"""`granular issue-once`: one plan + send + settle pass for an external cron, on a chain
of GRANULAR_RPC_URL; a second pass finds nothing to do."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from granular.adapters.chain.anvil import Anvil
from granular.adapters.db.engine import make_engine, session_factory
from granular.adapters.db.migrate import upgrade
from granular.cli import main
from granular.domain.energy import MaxEnergyPolicy
from granular.paths import project_root
from granular.services.examples import load_examples


def test_one_pass_issues_everything_due_and_a_second_finds_nothing(
    anvil: Anvil,
    w3: Web3,
    deployment: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"sqlite:///{tmp_path / 'granular.db'}"
    engine = make_engine(url)
    upgrade(engine)
    loaded = load_examples(
        sessions=session_factory(engine),
        fleet_path=project_root() / "examples" / "fleet.json",
        var_dir=tmp_path,
        policy=MaxEnergyPolicy(),
        now=datetime.now(UTC),
    )
    assert loaded is not None
    (tmp_path / "t.json").write_text(json.dumps(deployment))
    monkeypatch.setenv("GRANULAR_DATABASE_URL", url)
    monkeypatch.setenv("GRANULAR_RPC_URL", anvil.url)
    monkeypatch.setenv("GRANULAR_NETWORK", "t")
    monkeypatch.setenv("GRANULAR_DEPLOYMENTS_DIR", str(tmp_path))
    monkeypatch.delenv("GRANULAR_KEYSTORE", raising=False)
    sent_before = w3.eth.get_transaction_count(deployment["issuer"])

    assert main(["issue-once"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["itemsPlanned"] > 100
    assert summary["certificatesIssued"] == summary["itemsPlanned"]
    assert summary["batchesSubmitted"] == -(-summary["itemsPlanned"] // 100)
    assert (summary["itemsFailed"], summary["senderLeased"]) == (0, True)
    assert w3.eth.get_transaction_count(deployment["issuer"]) == (
        sent_before + summary["batchesSubmitted"]
    )

    assert main(["issue-once"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["itemsPlanned"], again["certificatesIssued"]) == (0, 0)
    assert w3.eth.get_transaction_count(deployment["issuer"]) == (  # nothing sent
        sent_before + summary["batchesSubmitted"]
    )


def test_its_help_names_its_settings(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("run", "issue-once", "deploy", "verify", "show"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "GRANULAR_" in text, command
    with pytest.raises(SystemExit):
        main(["issue-once", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in (
        "GRANULAR_DATABASE_URL",
        "GRANULAR_RPC_URL",
        "GRANULAR_KEYSTORE",
        "GRANULAR_GRACE_S",
    ):
        assert name in text
