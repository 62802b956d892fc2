from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from granular.adapters.db import models  # noqa: F401  (every table)
from granular.adapters.db.base import Base
from granular.adapters.db.migrate import alembic_config, downgrade, upgrade
from tests.databases import BACKENDS, migrated_engine


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
