"""Databases for storage tests: a SQLite file and a PostgreSQL database created for this
run and dropped after it. PostgreSQL unreachable: a failure in CI, a visible skip elsewhere."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, inspect, text

from granular.adapters.db.base import Base
from granular.adapters.db.engine import make_engine
from granular.adapters.db.migrate import upgrade

POSTGRES_ADMIN_URL = os.environ.get(
    "GRANULAR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", "postgresql"]


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this run; yields its SQLAlchemy URL, drops it after."""
    name = f"granular_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        reason = f"PostgreSQL at {POSTGRES_ADMIN_URL.split('@')[-1]} unreachable: {error}".strip()
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def migrated_engine(backend: str, tmp_dir: Path) -> Iterator[Engine]:
    """An engine on a new database of `backend` with every migration applied."""
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_dir / 'granular.db'}")
        upgrade(engine)
        yield engine
        engine.dispose()
        return
    with postgres_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        try:
            yield engine
        finally:
            engine.dispose()


def empty_all_tables(engine: Engine) -> None:
    """Delete every row, children first, so the next test starts from an empty schema."""
    with engine.begin() as connection:
        existing = set(inspect(connection).get_table_names())
        for table in reversed(Base.metadata.sorted_tables):
            if table.name in existing:
                connection.execute(text(f'DELETE FROM "{table.name}"'))
