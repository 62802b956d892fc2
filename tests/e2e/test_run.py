"""`granular run` as `make run` starts it, in a subprocess on SQLite and its own anvil:
the example fleet becomes `certificate_issued` lines; a kill -9 in the middle takes its
anvil down with it and the restart finishes the job minting nothing twice; `verify` and
`show` work from another process with no configuration; SIGTERM stops it with exit 0; a
restart (stopped by SIGINT) resumes on the same chain and mints nothing; a tampered header
fails `verify`."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from granular.paths import project_root

ISSUER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil's first development account


class Daemon:
    def __init__(self, env: dict[str, str], logs: Path, name: str) -> None:
        self.out = logs / f"{name}.out"
        self.err = logs / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "granular.cli", "run"],
                env=env,
                cwd=project_root(),
                stdout=out,
                stderr=err,
            )

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.err.read_text().splitlines():
            start = line.find("{")
            if start >= 0 and f'"event": "{name}"' in line:
                found.append(json.loads(line[start:]))
        return found

    def api_url(self) -> str | None:
        match = re.search(r"API at (http://\S+) ", self.out.read_text())
        return match.group(1) if match else None

    def stop(self, signum: int, timeout_s: float = 60) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wait_for(what: str, check: Callable[[], Any], daemon: Daemon, timeout_s: float = 180) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if daemon.process.poll() is not None:
            pytest.fail(
                f"granular run exited ({daemon.process.returncode}) before {what}:\n"
                + daemon.err.read_text()[-3000:]
            )
        time.sleep(0.25)
    pytest.fail(f"no {what} within {timeout_s} s:\n" + daemon.err.read_text()[-3000:])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def get_or_none(url: str) -> int | None:
    """The HTTP status of a JSON-RPC call to `url`, None when nothing answers."""
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}'
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status)
    except OSError:
        return None


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "granular.cli", *args],
        env=env,
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def certificates(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT certificate_id, tx_hash FROM issued_certificates ORDER BY certificate_id"
        ).fetchall()
    return [(int(a), str(b)) for a, b in rows]


def test_make_run_issues_the_examples_then_resumes_without_minting_twice(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    db = var_dir / "granular.db"
    env = {key: value for key, value in os.environ.items() if not key.startswith("GRANULAR_")} | {
        "GRANULAR_VAR_DIR": str(var_dir),
        "GRANULAR_DATABASE_URL": f"sqlite:///{db}",
        "GRANULAR_DEPLOYMENTS_DIR": str(tmp_path / "deployments"),
        "GRANULAR_API_PORT": "0",
        "GRANULAR_CATCH_UP_INTERVAL_S": "5",
        # Small batches signed one per round: issuance spreads over seconds, so the kill -9
        # below lands in the middle of it.
        "GRANULAR_ISSUANCE_BATCH_SIZE": "25",
        "GRANULAR_OUTBOX_BATCH_SIZE": "1",
    }
    crashed = Daemon(env, tmp_path, "crashed")
    try:
        wait_for("a first certificate", lambda: crashed.events("certificate_issued"), crashed)
        planned = sum(e.get("items_planned", 0) for e in crashed.events("job_done"))
        runtime = json.loads((var_dir / "anvil.json").read_text())
        crashed.process.kill()  # kill -9 in the middle of issuance
        crashed.process.wait()
    finally:
        crashed.kill()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and get_or_none(runtime["url"]) is not None:
        time.sleep(0.2)
    assert get_or_none(runtime["url"]) is None, "anvil outlived the granular run that started it"
    assert 0 < len(certificates(db)) < planned, "the kill -9 came too late to be mid-issuance"

    first = Daemon(env, tmp_path, "first")
    try:
        url = wait_for("API URL", first.api_url, first)
        wait_for(
            "every planned certificate issued", lambda: len(certificates(db)) >= planned, first
        )
        issued = first.events("certificate_issued")
        assert len(first.events("job_done")) >= 1
        assert sum(e.get("items_planned", 0) for e in first.events("job_done")) == 0
        # Nothing minted twice across the crash: ids 1..planned, one per item.
        assert [c for c, _ in certificates(db)] == list(range(1, planned + 1))
        assert planned > 100  # 7 days: wind every hour, solar by day
        assert all(re.fullmatch(r"0x[0-9a-f]{64}", line["txHash"]) for line in issued)
        assert "owner: gk_" in crashed.out.read_text() and "buyer: gk_" in crashed.out.read_text()

        status, health = get(f"{url}/healthz")
        assert status == 200 and json.loads(health)["scheduler"] == "running"
        _, metrics = get(f"{url}/metrics")
        assert metric(metrics, "granular_reads", outcome="accepted") == 506
        assert metric(metrics, "granular_issuance_items_total", state="issued") == len(issued)
        assert metric(metrics, "granular_outbox_queue_depth") == 0

        # From another terminal, with no configuration but the same var/ and deployments/.
        verified = cli(env, "verify", "1")
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["ok"] is True
        shown = cli(env, "show", "1")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["txHash"] == dict(certificates(db))[1]
        twice = cli(env, "run")
        assert twice.returncode == 1
        assert "a granular run already uses" in twice.stderr

        with sqlite3.connect(db) as connection:
            held = {name for (name,) in connection.execute("SELECT name FROM tx_lease")}
        assert held == {"issuance:31337", "matching:31337", f"outbox:31337:{ISSUER}"}
        assert first.stop(signal.SIGTERM) == 0
        assert first.events("daemon_stopped")
        assert not (var_dir / "anvil.json").exists()
        with sqlite3.connect(db) as connection:  # a clean stop releases both leases
            assert connection.execute("SELECT count(*) FROM tx_lease").fetchone() == (0,)
    finally:
        first.kill()
    minted = certificates(db)
    assert len(minted) == planned

    second = Daemon(env, tmp_path, "second")
    try:
        url = wait_for("API URL", second.api_url, second)
        ready = second.events("chain_ready")
        assert ready and ready[0]["deployed"] is False  # the same chain, the same registry

        def passes_done() -> bool:
            _, text = get(f"{url}/metrics")
            return all(
                (metric(text, "granular_job_runs_total", job=job) or 0) >= 2
                for job in ("issuance:catch-up", "issuance:settle")
            )

        # The catch-up runs at start; wait for a second settle and a second catch-up.
        wait_for("two catch-up and settle passes", passes_done, second, timeout_s=240)
        assert second.events("certificate_issued") == []
        assert "fleet loaded on" in second.out.read_text()  # loaded once, not again
        assert second.stop(signal.SIGINT) == 0
    finally:
        second.kill()
    assert certificates(db) == minted

    # A tampered header fails verification (the daemon is down: verify loads var/ state).
    with sqlite3.connect(db) as connection:
        (data_hash,) = connection.execute(
            "SELECT data_hash FROM issued_certificates WHERE certificate_id = 2"
        ).fetchone()
        connection.execute(
            "UPDATE certificate_headers SET header_json = "
            "replace(header_json, '\"isStandardIssued\":false', '\"isStandardIssued\":true') "
            "WHERE data_hash = ?",
            (data_hash,),
        )
    tampered = cli(env, "verify", "2")
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert json.loads(tampered.stdout)["ok"] is False
    assert cli(env, "verify", "3").returncode == 0
