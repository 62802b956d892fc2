"""certificate headers, device kind

Revision ID: 0008
Revises: 0007

The issuer's canonical JSON headers keyed by their keccak256 (DESIGN.md §7), and the kind
of each device (production or consumption; existing devices are production).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "certificate_headers",
        sa.Column("data_hash", sa.String(length=66), nullable=False),
        sa.Column("header_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("data_hash", name=op.f("pk_certificate_headers")),
    )
    for table in ("devices", "device_revisions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("kind", sa.String(length=16), server_default="production", nullable=False)
            )


def downgrade() -> None:
    for table in ("device_revisions", "devices"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("kind")
    op.drop_table("certificate_headers")
