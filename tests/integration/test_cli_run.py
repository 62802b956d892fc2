"""`granular run` against a chain of GRANULAR_RPC_URL checks everything before it starts,
and says what is wrong in one line (exit 1); the embedded anvil keeps its chain in var/."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.anvil import Anvil, EmbeddedChain, persistent_anvil
from granular.adapters.chain.client import connect
from granular.adapters.chain.deployer import has_code
from granular.adapters.chain.keys import anvil_account
from granular.adapters.db.outbox import RequestState, TxAttempt, TxRequest
from granular.cli import main
from granular.services import outbox
from granular.services.deployment import ensure_deployment

SECRET = "hunter2-secret"


@pytest.fixture
def run_against(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """`granular run` with GRANULAR_RPC_URL `url` and the record `record` as
    deployments/t.json; returns (exit status, stdout, stderr)."""
    directory = tmp_path / "deployments"
    directory.mkdir()
    monkeypatch.setenv("GRANULAR_DEPLOYMENTS_DIR", str(directory))
    monkeypatch.setenv("GRANULAR_NETWORK", "t")
    monkeypatch.setenv("GRANULAR_DATABASE_URL", f"sqlite:///{tmp_path / 'granular.db'}")
    monkeypatch.setenv("GRANULAR_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("GRANULAR_KEYSTORE", raising=False)
    monkeypatch.delenv("GRANULAR_PASSWORD_FILE", raising=False)

    def run(url: str, record: dict[str, Any] | None) -> tuple[int, str, str]:
        monkeypatch.setenv("GRANULAR_RPC_URL", url)
        if record is not None:
            (directory / "t.json").write_text(json.dumps(record))
        code = main(["run"])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("granular: "), err
    assert "Traceback" not in err and SECRET not in err
    return err


def test_no_record_is_one_line(run_against: Callable[..., tuple[int, str, str]]) -> None:
    code, out, err = run_against("http://127.0.0.1:9", None)
    assert (code, out) == (1, "")
    assert "t.json; run `granular deploy --network t` first" in _one_line(err)


def test_a_dead_rpc_is_one_line_without_the_url_path(
    run_against: Callable[..., tuple[int, str, str]], deployment: dict[str, Any]
) -> None:
    code, out, err = run_against(f"http://127.0.0.1:9/{SECRET}", deployment)
    assert (code, out) == (1, "")
    assert _one_line(err) == "granular: RPC http://127.0.0.1:9 is unreachable: ConnectionError\n"


def test_another_chain_id_is_one_line(
    run_against: Callable[..., tuple[int, str, str]], deployment: dict[str, Any], anvil: Anvil
) -> None:
    code, _, err = run_against(anvil.url, {**deployment, "chainId": 246})
    assert code == 1
    assert "t.json is for chain id 246, but http://127.0.0.1:" in _one_line(err)
    assert "is chain id 31337" in err


def test_no_code_at_the_recorded_address_is_one_line(
    run_against: Callable[..., tuple[int, str, str]], deployment: dict[str, Any], anvil: Anvil
) -> None:
    nowhere = Account.create().address
    code, _, err = run_against(anvil.url, {**deployment, "address": nowhere})
    assert code == 1
    assert f"no contract code at {nowhere} on chain id 31337" in _one_line(err)


@pytest.mark.parametrize("case", ["wrong-password", "missing-keystore", "no-password-file"])
def test_a_bad_keystore_is_one_line_that_shows_no_password(
    run_against: Callable[..., tuple[int, str, str]],
    deployment: dict[str, Any],
    anvil: Anvil,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    keystore = tmp_path / "issuer.json"
    keystore.write_text(json.dumps(Account.encrypt(Account.create().key, "right")))
    password = tmp_path / "password"
    password.write_text(SECRET)
    monkeypatch.setenv("GRANULAR_KEYSTORE", str(keystore))
    if case == "missing-keystore":
        monkeypatch.setenv("GRANULAR_KEYSTORE", str(tmp_path / "absent.json"))
    if case != "no-password-file":
        monkeypatch.setenv("GRANULAR_PASSWORD_FILE", str(password))
    code, _, err = run_against(anvil.url, deployment)
    assert code == 1
    expected = {
        "wrong-password": "does not decrypt it",
        "missing-keystore": "cannot read",
        "no-password-file": "a keystore needs its password file",
    }[case]
    assert expected in _one_line(err)


def test_the_embedded_chain_survives_a_restart_and_is_deployed_once(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    directory = tmp_path / "deployments"
    with persistent_anvil(var_dir) as first:
        record, deployed = ensure_deployment(
            rpc_url=first.url, network="local", directory=directory
        )
        assert deployed
        again, deployed_again = ensure_deployment(
            rpc_url=first.url, network="local", directory=directory
        )
        assert (again, deployed_again) == (record, False)
        EmbeddedChain(url=first.url, pid=1).write(var_dir)
        assert EmbeddedChain.running(var_dir) == EmbeddedChain(url=first.url, pid=1)
    assert EmbeddedChain.running(var_dir) is None  # it no longer answers
    with persistent_anvil(var_dir) as second:  # another port, the same chain
        w3, _ = connect(second.url)
        assert has_code(w3, record["address"])
        assert w3.eth.get_transaction_receipt(record["transactionHash"])["status"] == 1
        kept, deployed = ensure_deployment(rpc_url=second.url, network="local", directory=directory)
        assert (kept, deployed) == (record, False)
    (var_dir / "anvil-state.json").unlink()  # a wiped var/: a new chain, deployed again
    with persistent_anvil(var_dir) as fresh:
        _, deployed = ensure_deployment(rpc_url=fresh.url, network="local", directory=directory)
        assert deployed


def test_an_anvil_whose_granular_died_is_found_and_stopped(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    anvil = Anvil()
    anvil.start()
    try:
        assert anvil.pid is not None
        EmbeddedChain(url=anvil.url, pid=dead.pid, anvil_pid=anvil.pid).write(tmp_path)
        found = EmbeddedChain.running(tmp_path)
        assert found is not None and found.orphaned()
        found.stop_orphan()
        assert not anvil.answers()
        assert EmbeddedChain.running(tmp_path) is None
    finally:
        anvil.stop()
    alive = EmbeddedChain(url="http://127.0.0.1:1", pid=os.getpid())
    assert not alive.orphaned()


def test_an_embedded_chain_behind_the_database_gets_the_lost_transactions_again(
    sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    """A chain that lost blocks (anvil killed before it saved them) is sent the very signed
    bytes the outbox stored, so the same nonce carries the same payload again."""
    from granular.scheduler.stack import _check_not_behind

    sender = anvil_account(0)
    receiver = "0x" + "2" * 40
    signed = sender.sign_transaction(
        {
            "chainId": 31337,
            "nonce": 0,
            "to": receiver,
            "value": 12345,
            "gas": 21_000,
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    tx_hash = "0x" + bytes(signed.hash).hex()
    with Anvil() as fresh:  # head block 0: the chain that lost block 1
        _check_not_behind(fresh, sessions, 31337)
        assert "embedded_chain" not in caplog.text  # nothing confirmed yet: nothing to do
        with sessions.begin() as session:
            submitted = outbox.submit(
                session=session,
                chain_id=31337,
                signer=sender.address,
                idempotency_key="k",
                to=receiver,
                data=b"",
            )
            row = session.get(TxRequest, submitted.request_id)
            assert row is not None
            row.state, row.block_number, row.nonce, row.tx_hash = (
                RequestState.CONFIRMED.value,
                1,
                0,
                tx_hash,
            )
            session.add(
                TxAttempt(
                    request_id=row.id,
                    nonce=0,
                    tx_hash=tx_hash,
                    raw_tx=bytes(signed.raw_transaction),
                    fee_kind="eip1559",
                    max_fee_per_gas_wei=10**10,
                    max_priority_fee_per_gas_wei=10**9,
                    gas_limit=21_000,
                    created_at=datetime.now(UTC),
                )
            )
        _check_not_behind(fresh, sessions, 31337)
        receipt = fresh_rpc(fresh.url, "eth_getTransactionReceipt", [tx_hash])  # mined by then
        balance = int(fresh_rpc(fresh.url, "eth_getBalance", [receiver, "latest"]), 16)
    assert receipt is not None and int(receipt["status"], 16) == 1
    assert balance == 12345
    (line,) = [r.getMessage() for r in caplog.records if "embedded_chain" in r.getMessage()]
    event = json.loads(line)
    assert event["event"] == "embedded_chain_replayed"
    assert event["replayedTransactions"] == 1 and event["headBlock"] >= 1


def fresh_rpc(url: str, method: str, params: list[object]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["result"]
