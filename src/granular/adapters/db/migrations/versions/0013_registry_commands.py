"""registry commands, wallet names

Revision ID: 0013
Revises: 0012

Commands accepted over HTTP (relayed with the owner's signature, or the issuer's own) with
the forwarder nonces they hold and their outbox keys; the off-chain names of wallets.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_commands",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("signer", sa.String(length=42), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=True),
        sa.Column("nonce_count", sa.Integer(), nullable=False),
        sa.Column("deadline_s", sa.BigInteger(), nullable=True),
        sa.Column("relay_key", sa.String(length=200), nullable=True),
        sa.Column("tx_keys", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_commands")),
    )
    op.create_index(
        "ix_registry_commands_signer", "registry_commands", ["chain_id", "signer"], unique=False
    )
    op.create_index(
        "ix_registry_commands_relay_key",
        "registry_commands",
        ["chain_id", "relay_key"],
        unique=False,
    )
    op.create_table(
        "wallet_names",
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_wallet_names")),
    )


def downgrade() -> None:
    op.drop_table("wallet_names")
    op.drop_index("ix_registry_commands_relay_key", table_name="registry_commands")
    op.drop_index("ix_registry_commands_signer", table_name="registry_commands")
    op.drop_table("registry_commands")
