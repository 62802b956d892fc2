"""Schema migrations with Alembic, run from code (no alembic.ini needed)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

log = logging.getLogger("granular.migrate")

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema of `engine`'s database to `revision`. Quiet at INFO: nothing when
    the schema is already there, else one line naming the revisions (Alembic's own lines,
    one per migration and two about the dialect, only at DEBUG)."""
    config = alembic_config(engine)
    target = ScriptDirectory.from_config(config).as_revision_number(revision)
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current == target:
        return
    alembic_log = logging.getLogger("alembic")
    if not alembic_log.isEnabledFor(logging.DEBUG):
        alembic_log.setLevel(logging.WARNING)
    log.info("migrating the database schema from %s to %s", current or "empty", target)
    command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)
