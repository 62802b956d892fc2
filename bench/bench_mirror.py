"""The registry mirror (issue 8 §5):

- events indexed per second, SQLite and PostgreSQL (target >= 5,000/s): a registry on anvil
  with issueBatch certificates, transfers and splits; the figure is a whole `reindex` from
  the deployment block (eth_getLogs, decoding, raw events, derived rows, cursor), and the
  read-and-decode share of it alone;
- p95 of a filtered, paginated `GET /interface/registry/v1/slices` over a mirror of
  1,000,000 slices on PostgreSQL (target <= 50 ms), through the FastAPI app with an API key;
  the tables are filled by COPY, not by chain. Queries: owner + state (and its next pages),
  fuelCode + countryCode + state, certificateType + state, a period window, newest first.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from eth_utils.address import to_checksum_address
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from web3 import Web3

from granular.adapters.chain.anvil import Anvil
from granular.adapters.chain.artifacts import Artifact
from granular.adapters.chain.client import connect
from granular.adapters.chain.events import RegistryEventReader
from granular.adapters.db.engine import make_engine, session_factory
from granular.adapters.db.migrate import upgrade
from granular.api.app import create_app
from granular.services.accounts import create_api_key
from granular.services.deployment import deploy
from granular.services.indexer import IndexerConfig, reindex

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.databases import postgres_database

CHAIN_ID = 31337
BATCHES = 40
PER_BATCH = 500
TRANSFERS = 300
SPLITS = 200
TARGET_EVENTS_PER_S = 5_000
SLICES = 1_000_000
WALLETS = 2_000
QUERIES = 300
TARGET_P95_MS = 50.0
BLOCK_GAS_LIMIT = 400_000_000


def run() -> dict[str, Any]:
    figures: dict[str, Any] = {}
    figures["indexer"] = _indexer()
    print(f"  indexer: {figures['indexer']}", flush=True)
    figures["slices_api"] = _slices_api()
    print(f"  slices api: {figures['slices_api']}", flush=True)
    return figures


# --- events indexed per second ------------------------------------------------------------


def _wait(w3: Web3, hashes: list[Any]) -> None:
    for tx_hash in hashes[-1:]:
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=600)
        assert receipt["status"] == 1


def _fill_chain(w3: Web3, registry: Any) -> None:
    issuer, *holders = w3.eth.accounts[:5]
    hashes = []
    next_id = 1
    for batch in range(BATCHES):
        owner = holders[batch % len(holders)]
        items = [
            (owner, i % 2, 1_000 + i, Web3.keccak(text=f"h-{batch}-{i}")) for i in range(PER_BATCH)
        ]
        call = registry.functions.issueBatch(Web3.keccak(text=f"bench-{batch}"), items)
        hashes.append(call.transact({"from": issuer, "gas": 30_000_000}))
        next_id += PER_BATCH
    _wait(w3, hashes)
    owners = {i: holders[(i - 1) // PER_BATCH % len(holders)] for i in range(1, next_id)}
    hashes = []
    for slice_id in range(1, TRANSFERS + 1):
        owner = owners[slice_id]
        to = holders[(holders.index(owner) + 1) % len(holders)]
        call = registry.functions.transfer(slice_id, to)
        hashes.append(call.transact({"from": owner, "gas": 200_000}))
    for slice_id in range(TRANSFERS + 1, TRANSFERS + SPLITS + 1):
        owner = owners[slice_id]
        parts = [(100, holders[0]), (200, "0x" + "00" * 20)]
        call = registry.functions.split(slice_id, parts)
        hashes.append(call.transact({"from": owner, "gas": 400_000}))
    _wait(w3, hashes)


def _reindex_once(url: str, reader: RegistryEventReader, config: IndexerConfig) -> float:
    engine = make_engine(url)
    upgrade(engine)
    try:
        sessions = session_factory(engine)
        started = time.perf_counter()
        reindex(sessions=sessions, source=reader, config=config, now=lambda: datetime.now(UTC))
        seconds = time.perf_counter() - started
        with engine.connect() as connection:
            slices = connection.execute(text("SELECT count(*) FROM mirror_slices")).scalar_one()
        assert slices == BATCHES * PER_BATCH + SPLITS * 3, slices
    finally:
        engine.dispose()
    return seconds


def _indexer() -> dict[str, Any]:
    anvil = Anvil(args=("--gas-limit", str(BLOCK_GAS_LIMIT)))
    with tempfile.TemporaryDirectory() as tmp, anvil as node:
        record = deploy(rpc_url=node.url, network="bench", directory=Path(tmp))
        w3, _ = connect(node.url)
        registry = w3.eth.contract(
            address=record["address"], abi=Artifact.load("CertificateRegistry").abi
        )
        started = time.perf_counter()
        _fill_chain(w3, registry)
        fill_s = time.perf_counter() - started
        reader = RegistryEventReader(w3, record["address"], max_range_blocks=5_000)
        config = IndexerConfig(
            chain_id=CHAIN_ID, deployment_block=record["blockNumber"], chunk_blocks=5_000
        )
        head = w3.eth.block_number
        started = time.perf_counter()
        events = len(reader.logs(record["blockNumber"], head))
        read_s = time.perf_counter() - started
        sqlite_s = _reindex_once(f"sqlite:///{tmp}/mirror.db", reader, config)
        with postgres_database() as url:
            postgres_s = _reindex_once(url, reader, config)
    sqlite_rate = events / sqlite_s
    postgres_rate = events / postgres_s
    return {
        "events": events,
        "blocks": head - record["blockNumber"] + 1,
        "chain_fill_s": round(fill_s, 1),
        "read_and_decode_events_per_s": round(events / read_s),
        "sqlite_seconds": round(sqlite_s, 2),
        "sqlite_events_per_s": round(sqlite_rate),
        "postgresql_seconds": round(postgres_s, 2),
        "postgresql_events_per_s": round(postgres_rate),
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "target_met": min(sqlite_rate, postgres_rate) >= TARGET_EVENTS_PER_S,
    }


# --- GET /slices over a million slices ----------------------------------------------------

FUELS = ("ES100", "ES200", "ES300", "ES400", "ES500")
COUNTRIES = ("KE", "NG", "DE", "IN", "BR", "ZA", "GH", "TZ", "UG", "ET")
START = datetime(2026, 1, 1, tzinfo=UTC)


def _wallet(index: int) -> str:
    return to_checksum_address(f"0x{index + 1:040x}")


def _copy_rows(url: str) -> None:
    """500,000 certificates of 2 slices each, generated by the server (generate_series):
    owners over WALLETS checksummed addresses (a small table joined in), states mixed
    (Active 60 %, Claimed 20 %, Withdrawn 10 %, Removed 10 %), fuels, countries and hourly
    periods spread over a year."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    certificates = SLICES // 2
    fuels = "ARRAY[" + ",".join(f"'{f}'" for f in FUELS) + "]"
    countries = "ARRAY[" + ",".join(f"'{c}'" for c in COUNTRIES) + "]"
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE bench_wallets (n int PRIMARY KEY, address text)")
        with cursor.copy("COPY bench_wallets (n, address) FROM STDIN") as copy:
            for w in range(WALLETS):
                copy.write_row((w, _wallet(w)))
        cursor.execute(
            "INSERT INTO mirror_wallets (address, closed, active_slices, name)"
            " SELECT address, false, 300, NULL FROM bench_wallets"
        )
        cursor.execute(
            f"""
            INSERT INTO mirror_certificates (id, kind, quantity_wh, data_hash, owner, tx_hash,
                block_number, batch_id, asset_id, fuel_code, tech_code, country, period_start,
                period_end, reservation_id)
            SELECT g, g % 2, 2000, '0x' || lpad(to_hex(g), 64, '0'), w.address,
                '0x' || lpad(to_hex(g), 64, '0'), g / 100, NULL, 'device-' || (g % 5000),
                ({fuels})[1 + g % {len(FUELS)}], 'TC110',
                ({countries})[1 + (g * 7919) % {len(COUNTRIES)}],
                timestamptz '2026-01-01 00:00:00+00' + (g % 8760) * interval '1 hour',
                timestamptz '2026-01-01 01:00:00+00' + (g % 8760) * interval '1 hour',
                (g % 300)::text
            FROM generate_series(1::bigint, {certificates}) AS g
            JOIN bench_wallets w ON w.n = g % {WALLETS}
            """
        )
        cursor.execute(
            f"""
            INSERT INTO mirror_slices (id, certificate_id, owner, kind, state, quantity_wh,
                parent_id, block_number)
            SELECT g, (g + 1) / 2, w.address, ((g + 1) / 2) % 2,
                (ARRAY[1, 1, 1, 1, 1, 1, 3, 3, 4, 2])[1 + (g * 31) % 10], 1000, NULL,
                ((g + 1) / 2) / 100
            FROM generate_series(1::bigint, {SLICES}) AS g
            JOIN bench_wallets w ON w.n = (g * 7919) % {WALLETS}
            """
        )
        connection.commit()
        cursor.execute("ANALYZE")
        connection.commit()


def _slices_api() -> dict[str, Any]:
    rng = random.Random(5)
    with postgres_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        started = time.perf_counter()
        _copy_rows(url)
        fill_s = time.perf_counter() - started
        sessions = session_factory(engine)
        key = create_api_key(
            sessions=sessions,
            organization="Bench",
            role="viewer",
            label=None,
            now=datetime.now(UTC),
        ).key
        headers = {"Authorization": f"Bearer {key}"}
        app = create_app(sessions=sessions)
        timings: dict[str, list[float]] = {}
        try:
            with TestClient(app) as client:

                def get(kind: str, query: str) -> dict[str, Any]:
                    began = time.perf_counter()
                    response = client.get(f"/interface/registry/v1/slices?{query}", headers=headers)
                    elapsed = (time.perf_counter() - began) * 1000
                    assert response.status_code == 200, response.text
                    timings.setdefault(kind, []).append(elapsed)
                    body: dict[str, Any] = response.json()
                    return body

                for _ in range(5):  # warm the pool and the caches
                    get("warmup", "limit=50")
                for round_ in range(QUERIES // 6):
                    owner = _wallet(rng.randrange(WALLETS))
                    page = get("owner_state", f"owner={owner}&state=Active&limit=50")
                    if page["nextCursor"]:
                        get(
                            "owner_state_next_page",
                            f"owner={owner}&state=Active&limit=50&cursor={page['nextCursor']}",
                        )
                    fuel, country = rng.choice(FUELS), rng.choice(COUNTRIES)
                    get("fuel_country_state", f"fuelCode={fuel}&countryCode={country}&state=Active")
                    kind = rng.choice(("production", "consumption"))
                    after = rng.randrange(SLICES)
                    get("kind_state_cursor", f"certificateType={kind}&state=Claimed&cursor={after}")
                    day = START + timedelta(days=rng.randrange(360))
                    get(
                        "period_window",
                        f"periodFrom={day.isoformat().replace('+', '%2B')}"
                        f"&periodTo={(day + timedelta(hours=6)).isoformat().replace('+', '%2B')}",
                    )
                    get("owner_newest_first", f"owner={owner}&sort=-id&limit=100")
                    del round_
        finally:
            engine.dispose()
    timings.pop("warmup", None)
    every = sorted(t for values in timings.values() for t in values)

    def p95(values: list[float]) -> float:
        return round(statistics.quantiles(values, n=20)[18], 2) if len(values) > 1 else values[0]

    worst = p95(every)
    return {
        "slices": SLICES,
        "wallets": WALLETS,
        "fill_by_copy_s": round(fill_s, 1),
        "requests": len(every),
        "p50_ms": round(statistics.median(every), 2),
        "p95_ms": worst,
        "p95_ms_by_query": {kind: p95(values) for kind, values in timings.items()},
        "target_p95_ms": TARGET_P95_MS,
        "target_met": worst <= TARGET_P95_MS,
    }


if __name__ == "__main__":
    print(run())
