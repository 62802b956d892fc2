"""matching claims

Revision ID: 0014
Revises: 0013

The daemon's matching claims per (reservation, window, sequence), with the claimBatch's
outbox key and the window's production, consumption and matched Wh; per reservation, what
the last matching pass saw (e.g. waiting for the buyer's operator approval).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "matching_claims",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("reservation_id", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("entries", sa.JSON(), nullable=False),
        sa.Column("claimed_wh", sa.BigInteger(), nullable=False),
        sa.Column("production_wh", sa.BigInteger(), nullable=False),
        sa.Column("consumption_wh", sa.BigInteger(), nullable=False),
        sa.Column("matched_wh", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.id"],
            name="fk_matching_claims_reservation_id_reservations",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_matching_claims"),
        sa.UniqueConstraint(
            "reservation_id", "window_start", "sequence", name="uq_matching_claims_key"
        ),
    )
    op.create_index(
        "ix_matching_claims_reservation", "matching_claims", ["reservation_id"], unique=False
    )
    op.create_index(
        "ix_matching_claims_request", "matching_claims", ["idempotency_key"], unique=False
    )
    op.create_table(
        "matching_status",
        sa.Column("reservation_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.id"],
            name="fk_matching_status_reservation_id_reservations",
        ),
        sa.PrimaryKeyConstraint("reservation_id", name="pk_matching_status"),
    )


def downgrade() -> None:
    op.drop_table("matching_status")
    op.drop_index("ix_matching_claims_request", table_name="matching_claims")
    op.drop_index("ix_matching_claims_reservation", table_name="matching_claims")
    op.drop_table("matching_claims")
