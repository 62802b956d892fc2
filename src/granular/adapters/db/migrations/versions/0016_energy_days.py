"""daily energy rollup

Revision ID: 0016
Revises: 0015

`energy_days`: per device and UTC day, the Wh of the intervals starting on that day, so the
yield rule sums a trailing year from at most 365 rows instead of every interval in it.
Backfilled from `energy_intervals` in one INSERT ... SELECT ... GROUP BY. The day of a stored
instant is computed per dialect: PostgreSQL converts the timestamptz to UTC first; SQLite
holds every instant as its UTC text ("YYYY-MM-DD HH:MM:SS.ffffff"), whose date() is the UTC
day, in the same "YYYY-MM-DD" text SQLAlchemy stores a Date as.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "energy_days",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("energy_wh", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_energy_days_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("device_id", "day", name=op.f("pk_energy_days")),
    )
    if op.get_bind().dialect.name == "postgresql":
        day = "CAST(start_at AT TIME ZONE 'UTC' AS DATE)"
    else:
        day = "date(start_at)"
    op.execute(
        f"INSERT INTO energy_days (device_id, day, energy_wh) "
        f"SELECT device_id, {day}, SUM(energy_wh) FROM energy_intervals "
        f"GROUP BY device_id, {day}"
    )


def downgrade() -> None:
    op.drop_table("energy_days")
