"""Fixtures shared by every test folder: databases on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.engine import session_factory
from tests.databases import BACKENDS, empty_all_tables, migrated_engine


@pytest.fixture(scope="session", params=BACKENDS)
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A migrated database per backend for the session; every test using it runs on both."""
    with migrated_engine(request.param, tmp_path_factory.mktemp(request.param)) as the_engine:
        yield the_engine


@pytest.fixture
def sessions(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """A session factory on an empty schema; rows are deleted after the test."""
    yield session_factory(engine)
    empty_all_tables(engine)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that run on the PostgreSQL backend carry the `postgres` marker, so
    `pytest -m "not postgres"` runs the rest on a machine without the server."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgresql" in callspec.params.values():
            item.add_marker(pytest.mark.postgres)
