"""The transaction outbox: tx_request, tx_attempt, tx_nonce, tx_lease

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _id() -> sa.types.TypeEngine[int]:
    # BIGINT keys everywhere but SQLite, whose rowid alias must be spelled INTEGER.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tx_request",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("signer", sa.String(length=42), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("to_address", sa.String(length=42), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("items", sa.Integer(), nullable=True),
        sa.Column("gas_limit", sa.BigInteger(), nullable=True),
        sa.Column("nonce", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", sa.String(length=66), nullable=True),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tx_request"),
        sa.UniqueConstraint(
            "chain_id", "idempotency_key", name="uq_tx_request_chain_id_idempotency_key"
        ),
        sa.UniqueConstraint(
            "chain_id", "signer", "nonce", name="uq_tx_request_chain_id_signer_nonce"
        ),
    )
    op.create_index(
        "ix_tx_request_sender_state", "tx_request", ["chain_id", "signer", "state"], unique=False
    )
    op.create_table(
        "tx_attempt",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("request_id", _id(), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("raw_tx", sa.LargeBinary(), nullable=False),
        sa.Column("fee_kind", sa.String(length=8), nullable=False),
        sa.Column("max_fee_per_gas_wei", sa.BigInteger(), nullable=True),
        sa.Column("max_priority_fee_per_gas_wei", sa.BigInteger(), nullable=True),
        sa.Column("gas_price_wei", sa.BigInteger(), nullable=True),
        sa.Column("gas_limit", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_block", sa.BigInteger(), nullable=True),
        sa.Column("mined_block", sa.BigInteger(), nullable=True),
        sa.Column("mined_block_hash", sa.String(length=66), nullable=True),
        sa.Column("receipt_status", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["tx_request.id"],
            name="fk_tx_attempt_request_id_tx_request",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tx_attempt"),
        sa.UniqueConstraint("tx_hash", name="uq_tx_attempt_tx_hash"),
    )
    op.create_index("ix_tx_attempt_request_id", "tx_attempt", ["request_id"], unique=False)
    op.create_table(
        "tx_nonce",
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("signer", sa.String(length=42), nullable=False),
        sa.Column("next_nonce", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "signer", name="pk_tx_nonce"),
    )
    op.create_table(
        "tx_lease",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_tx_lease"),
    )


def downgrade() -> None:
    op.drop_table("tx_lease")
    op.drop_table("tx_nonce")
    op.drop_index("ix_tx_attempt_request_id", table_name="tx_attempt")
    op.drop_table("tx_attempt")
    op.drop_index("ix_tx_request_sender_state", table_name="tx_request")
    op.drop_table("tx_request")
