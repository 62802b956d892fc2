"""Two `granular run` replicas on one PostgreSQL and one chain: only the lease holder plans;
when it is killed (-9) the other takes over, and every certificate is minted once."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from web3 import Web3

from granular.adapters.chain.anvil import Anvil
from granular.adapters.db.engine import make_engine, session_factory
from granular.adapters.db.migrate import upgrade
from granular.domain.energy import MaxEnergyPolicy
from granular.paths import project_root
from granular.services.examples import load_examples
from tests.databases import postgres_database
from tests.e2e.test_run import Daemon, wait_for

pytestmark = pytest.mark.postgres


def test_the_survivor_takes_over_and_each_certificate_is_minted_once(
    anvil: Anvil, w3: Web3, deployment: dict[str, Any], tmp_path: Path
) -> None:
    """`w3` puts the test inside evm_snapshot / evm_revert like every chain test."""
    (tmp_path / "t.json").write_text(json.dumps(deployment))
    with postgres_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRANULAR_")} | {
            "GRANULAR_DATABASE_URL": url,
            "GRANULAR_RPC_URL": anvil.url,
            "GRANULAR_NETWORK": "t",
            "GRANULAR_DEPLOYMENTS_DIR": str(tmp_path),
            "GRANULAR_VAR_DIR": str(tmp_path / "var"),
            "GRANULAR_API_PORT": "0",
            "GRANULAR_CATCH_UP_INTERVAL_S": "1",
        }
        first = Daemon(env, tmp_path, "first")
        second: Daemon | None = None
        try:
            wait_for("the first replica", first.api_url, first)
            second = Daemon(env, tmp_path, "second")
            wait_for("the second replica", second.api_url, second)
            # The first holds the planner lease; the second's passes say so and plan nothing.
            blocked = wait_for(
                "the second replica to find the lease held",
                lambda: [e for e in second.events("job_done") if e.get("warnings")],
                second,
            )
            assert blocked[0]["job"].startswith("issuance:")
            first.process.kill()  # kill -9: no clean stop, its locks die with its connections
            first.process.wait()
            loaded = load_examples(
                sessions=session_factory(engine),
                fleet_path=project_root() / "examples" / "fleet.json",
                var_dir=tmp_path / "examples",
                policy=MaxEnergyPolicy(),
                now=datetime.now(UTC),
            )
            assert loaded is not None
            planned = wait_for(
                "the survivor to plan",
                lambda: sum(e.get("items_planned", 0) for e in second.events("job_done")),
                second,
                timeout_s=60,
            )
            started = time.monotonic()
            wait_for(
                "the survivor to issue everything",
                lambda: len(second.events("certificate_issued")) >= planned,
                second,
            )
            assert time.monotonic() - started < 120
            assert second.stop(signal.SIGTERM) == 0
        finally:
            first.kill()
            if second is not None:
                second.kill()
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT count(*), count(DISTINCT item_id) FROM issued_certificates")
            ).one()
            items = connection.execute(text("SELECT count(*) FROM issuance_items")).scalar_one()
        engine.dispose()
    assert first.events("certificate_issued") == []
    assert tuple(rows) == (planned, planned) and items == planned
