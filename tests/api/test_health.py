"""GET /healthz and GET /metrics, on SQLite and PostgreSQL: figures from stored state plus
the daemon's own counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db import outbox as outbox_db
from granular.api.app import create_app
from granular.services import outbox
from granular.services.metrics import Metrics

ISSUER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
REGISTRY = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_healthz_says_the_database_answers_and_needs_no_key(
    sessions: sessionmaker[Session],
) -> None:
    client = TestClient(create_app(sessions=sessions))
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert (body["ok"], body["database"], body["scheduler"]) == (True, "ok", "absent")


def test_healthz_is_503_when_the_daemon_s_scheduler_stopped(
    sessions: sessionmaker[Session],
) -> None:
    metrics = Metrics(sessions=sessions, chain_id=31337, registry_address=REGISTRY)
    running = [True]
    metrics.watch_scheduler(lambda: running[0])
    client = TestClient(create_app(sessions=sessions, metrics=metrics))
    assert client.get("/healthz").json()["scheduler"] == "running"
    running[0] = False
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["scheduler"] == "stopped"
    assert response.json()["registry"] == REGISTRY


def test_metrics_show_the_queue_its_age_the_last_block_and_the_daemon_s_counts(
    sessions: sessionmaker[Session],
) -> None:
    metrics = Metrics(
        sessions=sessions, chain_id=31337, registry_address=REGISTRY, clock=lambda: NOW
    )
    client = TestClient(create_app(sessions=sessions, metrics=metrics))
    empty = samples(client.get("/metrics").text)
    assert empty[("granular_outbox_queue_depth", ())] == 0
    assert empty[("granular_outbox_oldest_age_seconds", ())] == 0
    assert empty[("granular_reads", (("outcome", "accepted"),))] == 0
    with sessions.begin() as session:
        for n, age_s in ((1, 90), (2, 30), (3, 10)):
            outbox.submit(
                session=session,
                chain_id=31337,
                signer=ISSUER,
                idempotency_key=f"k{n}",
                to=REGISTRY,
                data=b"\x01",
                now=NOW - timedelta(seconds=age_s),
            )
    with sessions.begin() as session:  # the third is confirmed in block 42
        request = outbox_db.find_request(session=session, chain_id=31337, idempotency_key="k3")
        assert request is not None
        row = session.get(outbox_db.TxRequest, request.id)
        assert row is not None
        row.state, row.block_number = outbox_db.RequestState.CONFIRMED.value, 42
    metrics.count_pass(_Report(items_planned=5, certificates_issued=4, items_failed=1))
    metrics.outbox_leased(True)
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("granular_outbox_queue_depth", ())] == 2
    assert found[("granular_outbox_oldest_age_seconds", ())] == 90
    assert found[("granular_last_confirmed_block", ())] == 42
    assert found[("granular_issuance_items_total", (("state", "planned"),))] == 5
    assert found[("granular_issuance_items_total", (("state", "issued"),))] == 4
    assert found[("granular_issuance_items_total", (("state", "failed"),))] == 1
    assert found[("granular_lease_held", (("lease", "outbox"),))] == 1


class _Report:
    def __init__(
        self, items_planned: int = 0, certificates_issued: int = 0, items_failed: int = 0
    ) -> None:
        self.items_planned = items_planned
        self.batches_submitted = 0
        self.certificates_issued = certificates_issued
        self.items_failed = items_failed
