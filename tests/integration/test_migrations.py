from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from granular.adapters.db import models  # noqa: F401  (every table)
from granular.adapters.db.base import Base


def test_migrations_create_every_table_of_the_models(engine: Engine) -> None:
    assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set(Base.metadata.tables)


def test_migrated_schema_has_no_difference_from_the_models(engine: Engine) -> None:
    """Alembic's own comparison: columns, types, nullability, indexes, constraints."""
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
