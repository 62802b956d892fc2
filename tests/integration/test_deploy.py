"""scripts/deploy.py: what it writes, what it refuses, and how it fails (one line, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3

from granular.adapters.chain.anvil import Anvil
from granular.adapters.chain.artifacts import Artifact
from granular.adapters.chain.keys import anvil_account
from granular.paths import project_root

ROOT = project_root()
sys.path.insert(0, str(ROOT / "scripts"))
import deploy as deploy_script  # noqa: E402


def _keystore(tmp_path: Path, key: bytes, password: str = "correct horse") -> tuple[Path, Path]:
    keystore = tmp_path / "key.json"
    keystore.write_text(json.dumps(Account.encrypt(key, password, iterations=2)))
    password_file = tmp_path / "password"
    password_file.write_text(password + "\n")
    return keystore, password_file


def _run(
    capsys: pytest.CaptureFixture[str], *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    code = deploy_script.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def keystore_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    def use(key: bytes, password: str = "correct horse", typed: str | None = None) -> None:
        keystore, password_file = _keystore(tmp_path, key, password)
        if typed is not None:
            password_file.write_text(typed)
        monkeypatch.setenv("GRANULAR_DEPLOYER_KEYSTORE", str(keystore))
        monkeypatch.setenv("GRANULAR_DEPLOYER_PASSWORD_FILE", str(password_file))

    monkeypatch.delenv("GRANULAR_DEPLOYER_KEYSTORE", raising=False)
    monkeypatch.delenv("GRANULAR_DEPLOYER_PASSWORD_FILE", raising=False)
    return use


def test_deploys_and_writes_the_record(
    anvil: Anvil,
    w3: Web3,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    buyer: str,
    keystore_env: Any,
) -> None:
    code, out, err = _run(
        capsys,
        "--rpc-url",
        anvil.url,
        "--network",
        "dev",
        "--issuer",
        buyer.lower(),
        "--deployments-dir",
        str(tmp_path),
    )
    assert (code, err) == (0, "")
    record = json.loads((tmp_path / "dev.json").read_text())
    assert json.loads(out) == record
    assert record["chainId"] == 31337
    assert record["deployer"] == anvil_account(0).address
    assert record["artifactSha256"] == Artifact.load("CertificateRegistry").sha256
    receipt = w3.eth.get_transaction_receipt(record["transactionHash"])
    assert (receipt["contractAddress"], receipt["blockNumber"]) == (
        record["address"],
        record["blockNumber"],
    )
    registry = w3.eth.contract(
        address=record["address"], abi=Artifact.load("CertificateRegistry").abi
    )
    role = registry.functions.ISSUER_ROLE().call()
    assert registry.functions.hasRole(role, buyer).call()
    assert not registry.functions.hasRole(role, record["deployer"]).call()
    assert registry.functions.trustedForwarder().call() == record["forwarder"]
    assert len(w3.eth.get_code(record["forwarder"])) > 0


def test_refuses_to_overwrite_a_live_deployment_unless_forced(
    anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str], keystore_env: Any
) -> None:
    args = ("--rpc-url", anvil.url, "--network", "dev", "--deployments-dir", str(tmp_path))
    assert _run(capsys, *args)[0] == 0
    first = json.loads((tmp_path / "dev.json").read_text())
    code, out, err = _run(capsys, *args)
    assert code == 1
    assert "still on chain 31337; pass --force" in err
    assert json.loads((tmp_path / "dev.json").read_text()) == first
    assert _run(capsys, *args, "--force")[0] == 0
    assert json.loads((tmp_path / "dev.json").read_text())["address"] != first["address"]


def test_refuses_a_record_of_another_chain(
    anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str], keystore_env: Any
) -> None:
    (tmp_path / "dev.json").write_text(json.dumps({"chainId": 246, "address": "0x" + "11" * 20}))
    code, _, err = _run(
        capsys,
        "--rpc-url",
        anvil.url,
        "--network",
        "dev",
        "--deployments-dir",
        str(tmp_path),
        "--force",
    )
    assert code == 1
    assert "dev.json is for chain id 246, but the RPC is chain id 31337" in err


def test_signs_with_the_keystore_account(
    anvil: Anvil, w3: Web3, tmp_path: Path, capsys: pytest.CaptureFixture[str], keystore_env: Any
) -> None:
    fresh = Account.create()
    w3.provider.make_request("anvil_setBalance", [fresh.address, hex(10**19)])  # type: ignore[arg-type]
    keystore_env(fresh.key)
    code, out, err = _run(
        capsys, "--rpc-url", anvil.url, "--network", "ks", "--deployments-dir", str(tmp_path)
    )
    assert (code, err) == (0, "")
    assert json.loads(out)["deployer"] == fresh.address


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unreachable", "RPC http://127.0.0.1:9 is unreachable"),
        ("wrong-password", "does not decrypt it"),
        ("unfunded", "holds 0 wei; deploying needs about"),
        ("bad-issuer", "--issuer: '0x1234' is not a 20-byte hex address"),
        ("missing-keystore", "cannot read"),
    ],
    ids=lambda value: value if isinstance(value, str) and " " not in value else "",
)
def test_bad_input_ends_with_one_clear_line(
    anvil: Anvil,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    keystore_env: Any,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    expected: str,
) -> None:
    url = anvil.url
    args: list[str] = []
    if case == "unreachable":
        url = "http://127.0.0.1:9/secret-api-key"
    elif case == "wrong-password":
        keystore_env(Account.create().key, typed="not the password")
    elif case == "unfunded":
        keystore_env(Account.create().key)
    elif case == "bad-issuer":
        args = ["--issuer", "0x1234"]
    elif case == "missing-keystore":
        keystore_env(Account.create().key)
        monkeypatch.setenv("GRANULAR_DEPLOYER_KEYSTORE", str(tmp_path / "absent.json"))
    code, out, err = _run(
        capsys, "--rpc-url", url, "--network", "x", "--deployments-dir", str(tmp_path), *args
    )
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("deploy: ")
    assert expected in err
    assert "secret-api-key" not in err and "not the password" not in err
    assert not (tmp_path / "x.json").exists()


def test_development_key_only_on_chain_31337(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keystore_env: Any
) -> None:
    with Anvil(args=("--chain-id", "1337")) as other:
        code, _, err = _run(
            capsys, "--rpc-url", other.url, "--network", "x", "--deployments-dir", str(tmp_path)
        )
        assert code == 1
        assert "chain id 1337: no keystore given, and the anvil development key" in err
        assert "accepted only on chain id 31337" in err
        keystore_env(anvil_account(0).key)  # the same key inside a keystore is refused too
        code, _, err = _run(
            capsys, "--rpc-url", other.url, "--network", "x", "--deployments-dir", str(tmp_path)
        )
        assert code == 1
        assert "holds an anvil development account, accepted only on chain id 31337" in err
        assert "no keystore given" not in err  # the message fits what was given


def test_the_script_prints_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "deploy.py"),
            "--rpc-url",
            "http://127.0.0.1:9",
            "--network",
            "x",
            "--deployments-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == "deploy: RPC http://127.0.0.1:9 is unreachable: ConnectionError"


def test_deploys_when_the_next_base_fee_is_far_above_the_latest(
    anvil: Anvil, w3: Web3, tmp_path: Path, capsys: pytest.CaptureFixture[str], keystore_env: Any
) -> None:
    latest = int(w3.eth.get_block("latest")["baseFeePerGas"])
    w3.provider.make_request("anvil_setNextBlockBaseFeePerGas", [hex(latest * 50 + 10**9)])  # type: ignore[arg-type]
    code, _, err = _run(
        capsys, "--rpc-url", anvil.url, "--network", "hot", "--deployments-dir", str(tmp_path)
    )
    assert (code, err) == (0, "")


def test_an_rpc_that_dies_part_way_ends_in_one_line_without_the_url_path(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    keystore_env: Any,
) -> None:
    from granular.adapters.chain import deployer

    node = Anvil(log=tmp_path / "anvil.log").start()
    estimate = deployer.estimate_cost_wei

    def estimate_then_die(*args: Any, **kwargs: Any) -> int:
        needed = estimate(*args, **kwargs)
        node.stop()  # the RPC goes away between the cost check and the first send
        return needed

    monkeypatch.setattr(deployer, "estimate_cost_wei", estimate_then_die)
    try:
        code, out, err = _run(
            capsys,
            "--rpc-url",
            f"{node.url}/?apikey=secret-api-key",
            "--network",
            "dies",
            "--deployments-dir",
            str(tmp_path),
        )
    finally:
        node.stop()
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert err.startswith(f"deploy: RPC http://127.0.0.1:{node.port} is unreachable: ")
    assert "while deploying" in err  # it got past connecting: the RPC died part-way
    assert "secret-api-key" not in err
    assert not (tmp_path / "dies.json").exists()
