"""Health and Prometheus metrics: what /healthz and /metrics report.

Two sources, one registry per process (never prometheus-client's global one, so two apps in
one test process do not collide):
- stored state, read at scrape time (reads accepted / not accepted, outbox queue depth and
  oldest age, last confirmed block, lease rows): the same on every replica;
- the daemon's own counters (items planned / issued / failed, job runs and failures, whether
  this process holds the sender lease): zero in a process that runs no daemon.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db import health as db

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PassReportLike(Protocol):
    """The fields of issuance.PassReport the metrics count."""

    @property
    def items_planned(self) -> int: ...
    @property
    def batches_submitted(self) -> int: ...
    @property
    def certificates_issued(self) -> int: ...
    @property
    def items_failed(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    database: str  # "ok" or the driver's error class
    chain_id: int | None
    registry: str | None
    scheduler: str  # "running", "stopped" or "absent" (no daemon in this process)
    lease_held: bool | None
    checked_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "database": self.database,
            "chainId": self.chain_id,
            "registry": self.registry,
            "scheduler": self.scheduler,
            "leaseHeld": self.lease_held,
            "checkedAt": self.checked_at.isoformat(),
        }


class _StoredState(Collector):
    def __init__(
        self,
        sessions: sessionmaker[Session],
        chain_id: int | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._sessions = sessions
        self._chain_id = chain_id
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        with self._sessions() as session:
            found = db.snapshot(session=session, chain_id=self._chain_id, now=now)
        reads = GaugeMetricFamily(
            "granular_reads",
            "Meter reads stored as accepted, and not accepted (rejected or duplicate)",
            labels=["outcome"],
        )
        reads.add_metric(["accepted"], found.reads_accepted)
        reads.add_metric(["not_accepted"], found.reads_not_accepted)
        yield reads
        yield GaugeMetricFamily(
            "granular_outbox_queue_depth",
            "Transaction requests not yet final",
            value=found.outbox_queue_depth,
        )
        oldest = found.outbox_oldest_created_at
        yield GaugeMetricFamily(
            "granular_outbox_oldest_age_seconds",
            "Age of the oldest transaction request not yet final (0: none)",
            value=0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()),
        )
        yield GaugeMetricFamily(
            "granular_last_confirmed_block",
            "Block of the latest confirmed transaction request (0: none yet)",
            value=found.last_confirmed_block or 0,
        )
        holders = GaugeMetricFamily(
            "granular_lease_holder",
            "Unexpired lease rows (SQLite; PostgreSQL uses advisory locks)",
            labels=["lease", "holder"],
        )
        for lease in found.leases:
            holders.add_metric([lease.name, lease.holder], 1)
        yield holders


class Metrics:
    """The process's metrics. Thread-safe (prometheus-client's counters are)."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        chain_id: int | None = None,
        registry_address: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self.chain_id = chain_id
        self.registry_address = registry_address
        self.clock = clock
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_StoredState(sessions, chain_id, clock))
        self.items = Counter(
            "granular_issuance_items",
            "Issuance items by what happened to them in this process",
            labelnames=["state"],
            registry=self.registry,
        )
        for state in ("planned", "issued", "failed"):
            self.items.labels(state)
        self.batches = Counter(
            "granular_issuance_batches_submitted",
            "issueBatch requests added to the outbox by this process",
            registry=self.registry,
        )
        self.job_runs = Counter(
            "granular_job_runs", "Scheduler job runs", labelnames=["job"], registry=self.registry
        )
        self.job_failures = Counter(
            "granular_job_failures",
            "Scheduler job runs that raised",
            labelnames=["job"],
            registry=self.registry,
        )
        self.lease_held = Gauge(
            "granular_lease_held",
            "1 while this process holds the lease",
            labelnames=["lease"],
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._scheduler: Callable[[], bool] | None = None
        self._outbox_leased: bool | None = None

    def count_pass(self, report: PassReportLike) -> None:
        self.items.labels("planned").inc(report.items_planned)
        self.items.labels("issued").inc(report.certificates_issued)
        self.items.labels("failed").inc(report.items_failed)
        self.batches.inc(report.batches_submitted)

    def outbox_leased(self, leased: bool) -> None:
        with self._lock:
            self._outbox_leased = leased
        self.lease_held.labels("outbox").set(1 if leased else 0)

    def watch_scheduler(self, running: Callable[[], bool]) -> None:
        self._scheduler = running

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def health(self) -> Health:
        database = "ok"
        try:
            with self.sessions() as session:
                db.ping(session=session)
        except Exception as error:  # a health probe reports, it never raises
            database = type(error).__name__
        if self._scheduler is None:
            scheduler = "absent"
        else:
            scheduler = "running" if self._scheduler() else "stopped"
        with self._lock:
            leased = self._outbox_leased
        return Health(
            ok=database == "ok" and scheduler != "stopped",
            database=database,
            chain_id=self.chain_id,
            registry=self.registry_address,
            scheduler=scheduler,
            lease_held=leased,
            checked_at=self.clock(),
        )


def last_confirmed_block(*, sessions: sessionmaker[Session], chain_id: int) -> int | None:
    """The block of the latest confirmed transaction request on `chain_id`."""
    with sessions() as session:
        found = db.snapshot(session=session, chain_id=chain_id, now=datetime.now(UTC))
    return found.last_confirmed_block
