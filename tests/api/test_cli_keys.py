"""`granular api-key create/revoke`: the key printed once works, is stored hashed, and stops
working when revoked."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from granular.adapters.db.accounts import ApiKeyRow
from granular.adapters.db.engine import make_engine, session_factory
from granular.api.app import create_app
from granular.cli import main


def test_created_key_authenticates_until_revoked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("GRANULAR_DATABASE_URL", url)
    assert main(["api-key", "create", "--organization", "Solar Co", "--role", "buyer"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    prefix = key.split("_")[1]

    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions() as session:
        stored = session.scalars(select(ApiKeyRow)).one()
    assert stored.role == "buyer"
    assert key not in stored.key_hash and len(stored.key_hash) == 64

    client = TestClient(create_app(sessions=sessions))
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/devices", headers=headers).status_code == 200

    assert main(["api-key", "revoke", prefix]) == 0
    assert client.get("/devices", headers=headers).status_code == 401
    assert main(["api-key", "revoke", prefix]) == 1  # nothing left to revoke
    engine.dispose()


@pytest.mark.parametrize("form", ["gk_{}", "{}", "whole-key"], ids=["gk-prefix", "bare", "whole"])
def test_revoke_takes_the_prefix_as_printed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    form: str,
) -> None:
    monkeypatch.setenv("GRANULAR_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    assert main(["api-key", "create", "--organization", "Solar Co", "--role", "buyer"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    prefix = key.split("_")[1]
    given = key if form == "whole-key" else form.format(prefix)
    assert main(["api-key", "revoke", given]) == 0
    assert capsys.readouterr().out.strip() == f"revoked 1 key(s) with prefix {prefix}"


def test_revoke_refuses_what_is_not_a_prefix_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRANULAR_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    assert main(["api-key", "revoke", "gk_xyz"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a key prefix" in err


def test_migrating_says_one_line_at_info_and_nothing_when_up_to_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GRANULAR_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    with caplog.at_level(logging.INFO):
        assert main(["migrate"]) == 0
    first = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(first) == 1 and first[0].startswith("migrating the database schema from empty")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["migrate"]) == 0
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


def test_help_names_defaults_and_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 8000)" in out and "(default: 127.0.0.1)" in out
    assert "GRANULAR_DATABASE_URL" in out


def test_unknown_role_is_refused_by_the_cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GRANULAR_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    with pytest.raises(SystemExit) as exit_info:
        main(["api-key", "create", "--organization", "X", "--role", "admin"])
    assert exit_info.value.code == 2


def test_a_label_longer_than_its_column_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On PostgreSQL a 201-character label was a DataError traceback out of the CLI."""
    monkeypatch.setenv("GRANULAR_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    argv = ["api-key", "create", "--organization", "X", "--role", "buyer", "--label"]
    assert main([*argv, "x" * 201]) == 1
    assert "label: 201 characters; at most 200" in capsys.readouterr().err
    assert main([*argv, "x" * 200]) == 0
