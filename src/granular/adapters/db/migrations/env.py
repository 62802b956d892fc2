"""Alembic environment: the engine comes from granular.adapters.db.migrate."""

from __future__ import annotations

from alembic import context

from granular.adapters.db import models  # noqa: F401  (registers every table)
from granular.adapters.db.base import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
