"""Meter-read ingestion (issue 3): reads validated per second in the core (target 50,000/s),
reads per second through POST /meter-reads in batches of 1,000 on SQLite and PostgreSQL
(target 5,000/s), and peak memory while ingesting 1,000,000 reads.

`tail_reads_per_s` is the rate over the last tenth of the batches, when each device has the
most stored: the `*_year` runs fill one device past a year of 5-minute intervals (105,120
in its trailing year), the steady state of a device the yield rule reads a full year of."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from granular.adapters.db.engine import make_engine, session_factory
from granular.adapters.db.migrate import upgrade
from granular.adapters.db.readings import add_reads_and_intervals, add_submission, trailing_year
from granular.api.app import create_app
from granular.domain.energy import (
    YIELD_WINDOW,
    DeviceProfile,
    EnergyInterval,
    MaxEnergyPolicy,
    TrailingYear,
)
from granular.domain.reads import DeviceReadState, InMemoryRecordedReads, RawRead, ReadKind
from granular.domain.reads import validate_reads as validate
from granular.services.accounts import authenticate, create_api_key
from granular.services.devices import register_devices

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.databases import postgres_database

NOW = datetime(2026, 6, 1, tzinfo=UTC)
START = datetime(2016, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)
BATCH = 1000
YEAR_OF_STEPS = 365 * 24 * 12  # the stored year the yield rule sees, as storage hands it over
YEAR_RUN_READS = 120_000  # one device, 5-minute reads: the last tenth each sees a full year


def _stored_year(
    intervals: list[EnergyInterval], first_end: datetime, last_end: datetime
) -> TrailingYear:
    """What `adapters.db.readings.trailing_year` hands over: the core summed, the edges."""
    core_start, core_end = TrailingYear.core(first_end, last_end)
    window_start = first_end - YIELD_WINDOW
    core_wh = 0
    edges = []
    for interval in intervals:
        if core_start <= interval.start and interval.end <= core_end:
            core_wh += interval.energy_wh
        elif interval.start < last_end and interval.end > window_start:
            edges.append(interval)
    return TrailingYear(covers=(first_end, last_end), core_wh=core_wh, intervals=edges)


def _core(reads: int = 200_000) -> dict[str, Any]:
    """Validation alone, the D-REC yield rule included: each batch gets the stored year as
    storage would load it (built before the clock starts; loading is the API figure's)."""
    profile = DeviceProfile("bench", 50_000, datetime(2015, 1, 1, tzinfo=UTC))
    policy = MaxEnergyPolicy()
    raws = [RawRead(ReadKind.DELTA, START + STEP * i, 400) for i in range(reads)]
    intervals = [
        EnergyInterval("bench", START + STEP * (i - 1), START + STEP * i, 400)
        for i in range(1, reads)
    ]
    years = [
        _stored_year(
            intervals[max(0, offset - YEAR_OF_STEPS - BATCH) : max(0, offset - 1)],
            START + STEP * offset,
            START + STEP * (min(offset + BATCH, reads) - 1),
        )
        for offset in range(0, reads, BATCH)
    ]
    state = DeviceReadState()
    accepted = 0
    started = time.perf_counter()
    for number, offset in enumerate(range(0, reads, BATCH)):
        batch = validate(
            raws[offset : offset + BATCH],
            device=profile,
            state=state,
            recorded=InMemoryRecordedReads(),
            year=years[number],
            policy=policy,
            now=NOW,
        )
        state = batch.state
        accepted += len(batch.accepted_reads)
    elapsed = time.perf_counter() - started
    assert accepted == reads, accepted
    return {"reads": reads, "reads_per_s": round(reads / elapsed), "target_per_s": 50_000}


def _bodies(count: int, device_count: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """Batches of 1,000 delta reads, round-robin over devices, 5 minutes apart."""
    per_device = count // device_count
    for offset in range(0, per_device, BATCH):
        for d in range(device_count):
            reads = [
                {"endtimestamp": (START + STEP * (offset + i)).isoformat(), "value": 400}
                for i in range(min(BATCH, per_device - offset))
            ]
            yield f"dev-{d}", {"type": "delta", "reads": reads}


def _api(url: str, reads: int, device_count: int) -> dict[str, Any]:
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    key = create_api_key(
        sessions=sessions, organization="bench", role="device_owner", label=None, now=NOW
    ).key
    headers = {"Authorization": f"Bearer {key}"}
    app = create_app(sessions=sessions, clock=lambda: NOW)
    rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with TestClient(app) as client:
        for d in range(device_count):
            client.post(
                "/devices",
                headers=headers,
                json={
                    "externalId": f"dev-{d}",
                    "countryCode": "KEN",
                    "fuelCode": "ES100",
                    "deviceTypeCode": "TC110",
                    "capacity": 50_000,
                    "commissioningDate": "2015-01-01",
                    "gridInterconnection": True,
                    "offTaker": "School",
                },
            ).raise_for_status()
        accepted = 0
        bodies = list(_bodies(reads, device_count))
        tail_from = len(bodies) - max(1, len(bodies) // 10)
        tail_reads = 0
        started = tail_started = time.perf_counter()
        for index, (external_id, body) in enumerate(bodies):
            if index == tail_from:
                tail_started = time.perf_counter()
            response = client.post(f"/meter-reads/{external_id}", headers=headers, json=body)
            response.raise_for_status()
            summary = response.json()["summary"]
            accepted += summary["accepted"]
            if index >= tail_from:
                tail_reads += len(body["reads"])
            if index % 100 == 99:
                print(f"   {accepted:,} reads accepted", file=sys.stderr, flush=True)
        finished = time.perf_counter()
        elapsed = finished - started
    engine.dispose()
    rss_after_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "reads": reads,
        "accepted": accepted,
        "reads_per_s": round(reads / elapsed),
        "tail_reads_per_s": round(tail_reads / (finished - tail_started)),
        "target_per_s": 5_000,
        "peak_rss_mib": round(rss_after_kib / 1024),
        "peak_rss_growth_mib": round((rss_after_kib - rss_before_kib) / 1024),
    }


def _year_load(url: str, calls: int = 100) -> dict[str, Any]:
    """The yield rule's storage cost alone: `trailing_year` loaded for a request of 1,000
    5-minute reads of a device storing a year and a week of them before it (106,000
    intervals, 105,120 in each trailing year), in milliseconds per request."""
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    key = create_api_key(
        sessions=sessions, organization="bench", role="device_owner", label=None, now=NOW
    ).key
    owner = authenticate(sessions=sessions, authorization=f"Bearer {key}")
    row = {
        "externalId": "year",
        "countryCode": "KEN",
        "fuelCode": "ES100",
        "deviceTypeCode": "TC110",
        "capacity": 50_000,
        "commissioningDate": "2015-01-01",
        "gridInterconnection": True,
        "offTaker": "School",
    }
    device = register_devices(
        sessions=sessions, organization_id=owner.organization_id, rows=[(1, row)], now=NOW
    )[0].device
    assert device is not None
    stored = YEAR_OF_STEPS + 2016
    with sessions.begin() as session:
        submission = add_submission(
            session=session,
            device_id=device.id,
            api_key_id=None,
            received_at=NOW,
            kind="delta",
            unit="Wh",
            payload={},
            read_count=stored,
            accepted_count=stored,
            device_revision_id=None,
        )
        intervals = [
            (EnergyInterval("year", START + STEP * i, START + STEP * (i + 1), 400), ReadKind.DELTA)
            for i in range(stored)
        ]
        add_reads_and_intervals(
            session=session,
            device_id=device.id,
            submission_id=submission,
            reads=[],
            intervals=intervals,
        )
    first_end = START + STEP * (stored + 1)
    last_end = first_end + STEP * (BATCH - 1)
    with sessions() as session:
        started = time.perf_counter()
        for _ in range(calls):
            year = trailing_year(
                session=session,
                device_id=device.id,
                device_key="year",
                first_end=first_end,
                last_end=last_end,
            )
        elapsed = time.perf_counter() - started
    assert year.energy_wh(first_end) == 400 * (YEAR_OF_STEPS - 1), year.energy_wh(first_end)
    engine.dispose()
    return {
        "stored_intervals": stored,
        "calls": calls,
        "ms_per_load": round(elapsed / calls * 1000, 2),
    }


def run() -> dict[str, Any]:
    figures: dict[str, Any] = {"core": _core()}
    print(f"  core: {figures['core']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        figures["year_load_sqlite"] = _year_load(f"sqlite:///{tmp}/load.db")
        print(f"  year load sqlite: {figures['year_load_sqlite']}", flush=True)
    with postgres_database() as url:
        figures["year_load_postgresql"] = _year_load(url)
        print(f"  year load postgresql: {figures['year_load_postgresql']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        figures["api_sqlite"] = _api(f"sqlite:///{tmp}/bench.db", 50_000, 5)
        print(f"  api sqlite: {figures['api_sqlite']}", flush=True)
        figures["api_sqlite_year"] = _api(f"sqlite:///{tmp}/year.db", YEAR_RUN_READS, 1)
        print(f"  api sqlite year: {figures['api_sqlite_year']}", flush=True)
    with postgres_database() as url:
        figures["api_postgresql"] = _api(url, 50_000, 5)
        print(f"  api postgresql: {figures['api_postgresql']}", flush=True)
    with postgres_database() as url:
        figures["api_postgresql_year"] = _api(url, YEAR_RUN_READS, 1)
        print(f"  api postgresql year: {figures['api_postgresql_year']}", flush=True)
    figures["million_sqlite"] = _million_in_a_fresh_process()
    return figures


def _million_in_a_fresh_process() -> dict[str, Any]:
    """1,000,000 reads on SQLite in a child process, so its peak RSS is this run's alone."""
    code = (
        "import json, sys, tempfile, warnings; warnings.simplefilter('ignore'); "
        f"sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_ingest; "
        "d = tempfile.mkdtemp(); "
        "print(json.dumps(bench_ingest._api(f'sqlite:///{d}/million.db', 1_000_000, 10)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=1800
    )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures
