"""`granular run` mirrors what it mints: its `indexer:index` job reads the registry's events,
so the read API lists the example fleet's certificates with their headers; the example buyer
approved the issuer, so `matching:claim` claims each hour; `granular index` and
`granular reindex` work from another terminal."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.test_run import Daemon, cli, wait_for

V1 = "/interface/registry/v1"


def get_json(url: str, key: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read().decode())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def run_env(tmp_path: Path) -> dict[str, str]:
    var_dir = tmp_path / "var"
    return {k: v for k, v in os.environ.items() if not k.startswith("GRANULAR_")} | {
        "GRANULAR_VAR_DIR": str(var_dir),
        "GRANULAR_DATABASE_URL": f"sqlite:///{var_dir / 'granular.db'}",
        "GRANULAR_DEPLOYMENTS_DIR": str(tmp_path / "deployments"),
        "GRANULAR_API_PORT": "0",
        "GRANULAR_CATCH_UP_INTERVAL_S": "5",
        "GRANULAR_INDEX_INTERVAL_S": "1",
        "GRANULAR_MATCH_INTERVAL_S": "2",
    }


def test_run_indexes_its_own_certificates_with_headers(tmp_path: Path) -> None:
    env = run_env(tmp_path)
    daemon = Daemon(env, tmp_path, "run")
    try:
        url = wait_for("API URL", daemon.api_url, daemon)
        keys = json.loads((tmp_path / "var" / "examples.json").read_text())["apiKeys"]
        key = keys["buyer"]

        def mirrored() -> Any:
            status, body = get_json(f"{url}{V1}/certificates?limit=200", key)
            return (
                body["certificates"] if status == 200 and len(body["certificates"]) > 100 else None
            )

        listed = wait_for("certificates in the mirror", mirrored, daemon)
        assert [c["certificateID"] for c in listed] == list(range(1, len(listed) + 1))
        assert {c["countryCode"] for c in listed} == {"KEN"}
        assert {c["certificateType"] for c in listed} == {"production", "consumption"}
        status, one = get_json(f"{url}{V1}/certificates/1", key)
        assert status == 200 and one["header"] is not None and one["headerCanonical"]
        # Provenance: the device the certificate was issued for, by the link it carries.
        status, revisions = get_json(f"{url}{one['links']['device']}", key)
        assert status == 200 and revisions["revisions"], revisions
        assert daemon.events("daemon_started")[0]["jobs"].count("indexer:index") == 1
        # The signed commands are set up: typed data to sign is served, not a 500.
        buyer = "0x" + "11" * 20
        status, typed = get_json(
            f"{url}{V1}/wallets/{buyer}/operators/typed-data"
            f"?operator={'0x' + '22' * 20}&approved=true",
            key,
        )
        assert status == 200, typed
        assert typed["typedData"]["message"]["from"].lower() == buyer
        # The example buyer approved the issuer (anvil only): the daemon claims each hour.
        assert daemon.events("example_operator")[0]["outcome"] == "approved"
        examples = json.loads((tmp_path / "var" / "examples.json").read_text())
        rid = examples["reservationId"]

        def matched() -> Any:
            status, body = get_json(f"{url}/reservations/{rid}", key)
            found = body.get("matching") if status == 200 else None
            return found if found and found["state"] == "up_to_date" else None

        found = wait_for("the example's matching claims", matched, daemon)
        assert found["claimedWh"] > 0 and found["consumedWh"] > 0
        assert found["claimedWh"] + found["deficitWh"] == found["consumedWh"]
        status, claims = get_json(f"{url}{V1}/claims?limit=500", key)
        assert status == 200 and claims["claims"]
        assert sum(c["quantityWh"] for c in claims["claims"]) == found["claimedWh"]
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        daemon.kill()
    once = cli(env, "index")
    assert once.returncode == 0, once.stderr
    again = cli(env, "reindex")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["events"] > 100
