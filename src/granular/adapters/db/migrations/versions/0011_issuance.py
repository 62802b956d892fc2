"""issuance: items, batches, issued certificates, provenance, per-reservation state

Revision ID: 0011
Revises: 0010

Issue 7 §3: the issuance items keyed (reservation, device, window start, sequence), the
issueBatch transactions they travel in, the certificates the chain gave them, and the
provenance of each, kept for as long as the certificate.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _id() -> sa.types.TypeEngine[int]:
    # BIGINT keys everywhere but SQLite, whose rowid alias must be spelled INTEGER.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "issuance_batches",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", sa.String(length=66), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("parent_id", _id(), nullable=True),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["issuance_batches.id"],
            name="fk_issuance_batches_parent_id_issuance_batches",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_issuance_batches"),
        sa.UniqueConstraint("chain_id", "batch_id", name="uq_issuance_batches_chain_id_batch_id"),
    )
    op.create_index(
        "ix_issuance_batches_chain_state", "issuance_batches", ["chain_id", "state"], unique=False
    )
    op.create_table(
        "issuance_items",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("reservation_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("quantity_wh", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=42), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("data_hash", sa.String(length=66), nullable=True),
        sa.Column("batch_row_id", _id(), nullable=True),
        sa.Column("batch_position", sa.Integer(), nullable=True),
        sa.Column("failure_code", sa.String(length=100), nullable=True),
        sa.Column("failure_detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_row_id"],
            ["issuance_batches.id"],
            name="fk_issuance_items_batch_row_id_issuance_batches",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name="fk_issuance_items_device_id_devices"
        ),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.id"],
            name="fk_issuance_items_reservation_id_reservations",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_issuance_items"),
        sa.UniqueConstraint(
            "reservation_id",
            "device_id",
            "window_start",
            "sequence",
            name="uq_issuance_items_key",
        ),
    )
    op.create_index("ix_issuance_items_batch", "issuance_items", ["batch_row_id"], unique=False)
    op.create_table(
        "issued_certificates",
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("certificate_id", sa.BigInteger(), nullable=False),
        sa.Column("item_id", _id(), nullable=False),
        sa.Column("batch_row_id", _id(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("data_hash", sa.String(length=66), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_row_id"],
            ["issuance_batches.id"],
            name="fk_issued_certificates_batch_row_id_issuance_batches",
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["issuance_items.id"], name="fk_issued_certificates_item_id_issuance_items"
        ),
        sa.PrimaryKeyConstraint("chain_id", "certificate_id", name="pk_issued_certificates"),
        sa.UniqueConstraint("item_id", name="uq_issued_certificates_item_id"),
    )
    op.create_table(
        "issuance_provenance",
        sa.Column("item_id", _id(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["issuance_items.id"], name="fk_issuance_provenance_item_id_issuance_items"
        ),
        sa.PrimaryKeyConstraint("item_id", name="pk_issuance_provenance"),
    )
    op.create_table(
        "issuance_reservation_state",
        sa.Column("reservation_id", sa.Integer(), nullable=False),
        sa.Column("considered_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("target_reached_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.id"],
            name="fk_issuance_reservation_state_reservation_id_reservations",
        ),
        sa.PrimaryKeyConstraint("reservation_id", name="pk_issuance_reservation_state"),
    )


def downgrade() -> None:
    op.drop_table("issuance_reservation_state")
    op.drop_table("issuance_provenance")
    op.drop_table("issued_certificates")
    op.drop_index("ix_issuance_items_batch", table_name="issuance_items")
    op.drop_table("issuance_items")
    op.drop_index("ix_issuance_batches_chain_state", table_name="issuance_batches")
    op.drop_table("issuance_batches")
