from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select

from granular.adapters.db import models  # noqa: F401  (every table)
from granular.adapters.db.base import Base, as_utc
from granular.adapters.db.engine import session_factory
from granular.adapters.db.migrate import alembic_config, downgrade, upgrade
from granular.adapters.db.readings import EnergyDayRow, EnergyIntervalRow
from granular.domain.reads import ReadKind
from tests.databases import BACKENDS, migrated_engine
from tests.integration.issuance_helpers import add_device, principal, reads, utc


def test_migrations_create_every_table_of_the_models(engine: Engine) -> None:
    assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set(Base.metadata.tables)


def test_migrated_schema_has_no_difference_from_the_models(engine: Engine) -> None:
    """Alembic's own comparison: columns, types, nullability, indexes, constraints."""
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_migration_downgrades_and_upgrades_again(backend: str, tmp_path: Path) -> None:
    with migrated_engine(backend, tmp_path) as fresh:
        downgrade(fresh, "base")
        assert set(inspect(fresh).get_table_names()) <= {"alembic_version"}
        upgrade(fresh)
        with fresh.connect() as connection:
            context = MigrationContext.configure(connection)
            assert context.get_current_heads() == (
                ScriptDirectory.from_config(alembic_config(fresh)).get_current_head(),
            )
            assert compare_metadata(context, Base.metadata) == []


def _rollup(engine: Engine) -> dict[tuple[int, date], int]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(EnergyDayRow.device_id, EnergyDayRow.day, EnergyDayRow.energy_wh)
        )
        return {(device_id, day): wh for device_id, day, wh in rows}


def _summed_by_start_day(engine: Engine) -> dict[tuple[int, date], int]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                EnergyIntervalRow.device_id, EnergyIntervalRow.start_at, EnergyIntervalRow.energy_wh
            )
        )
        totals: dict[tuple[int, date], int] = {}
        for device_id, start, wh in rows:
            key = (device_id, as_utc(start).date())
            totals[key] = totals.get(key, 0) + wh
        return totals


@pytest.mark.parametrize("backend", BACKENDS)
def test_0016_backfills_the_daily_rollup_as_ingestion_keeps_it(
    backend: str, tmp_path: Path
) -> None:
    """Reads of every kind (history crossing midnights, a delta series, running totals, a
    re-submission that must not count twice) ingested at head keep the rollup; dropped and
    rebuilt by 0016's backfill from the intervals, it is the same, row for row."""
    now = utc(2026, 6, 1)
    with migrated_engine(backend, tmp_path) as fresh:
        sessions = session_factory(fresh)
        owner = principal(sessions, "Solar Co", "device_owner")
        for external_id in ("plant-1", "plant-2"):
            add_device(sessions, owner, external_id, now=now)
        history = [
            (utc(2025, 1, 1, 22), utc(2025, 1, 2, 3), 500),
            (utc(2025, 1, 2, 3), utc(2025, 1, 5), 9000),
            (utc(2025, 1, 5, 23, 59), utc(2025, 1, 6, 0, 1), 2),
        ]
        reads(sessions, owner, "plant-1", ReadKind.HISTORY, history, now=now)
        reads(sessions, owner, "plant-1", ReadKind.HISTORY, history, now=now)  # duplicates
        deltas = [(None, utc(2025, 1, 6, hour), 100 + hour) for hour in range(1, 24, 5)]
        reads(sessions, owner, "plant-1", ReadKind.DELTA, deltas, now=now)
        totals = [(None, utc(2025, 1, 1) + k * timedelta(hours=7), 1000 * k) for k in range(12)]
        reads(sessions, owner, "plant-2", ReadKind.AGGREGATE, totals, now=now)
        kept = _rollup(fresh)
        assert kept == _summed_by_start_day(fresh)
        assert len({device for device, _ in kept}) == 2 and len(kept) >= 7, kept

        downgrade(fresh, "0015")
        assert "energy_days" not in inspect(fresh).get_table_names()
        upgrade(fresh)
        assert _rollup(fresh) == kept
