from __future__ import annotations

from sqlalchemy import Engine, inspect

from granular.adapters.db.base import Base


def test_migrations_create_every_table_of_the_models(engine: Engine) -> None:
    """The Alembic head and the SQLAlchemy models describe the same tables."""
    assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set(
        Base.metadata.tables
    )
