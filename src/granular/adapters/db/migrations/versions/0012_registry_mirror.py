"""registry mirror

Revision ID: 0012
Revises: 0011

The registry mirror (DESIGN.md §7): cursor, recent blocks, raw events, and the derived
certificates, slices, claims, wallets and operators, with the indexes the read API filters on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mirror_blocks",
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=66), nullable=False),
        sa.Column("parent_hash", sa.String(length=66), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "number", name=op.f("pk_mirror_blocks")),
    )
    op.create_table(
        "mirror_certificates",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("quantity_wh", sa.BigInteger(), nullable=False),
        sa.Column("data_hash", sa.String(length=66), nullable=False),
        sa.Column("owner", sa.String(length=42), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", sa.String(length=66), nullable=True),
        sa.Column("asset_id", sa.String(length=200), nullable=True),
        sa.Column("fuel_code", sa.String(length=32), nullable=True),
        sa.Column("tech_code", sa.String(length=32), nullable=True),
        sa.Column("country", sa.String(length=8), nullable=True),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reservation_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mirror_certificates")),
    )
    with op.batch_alter_table("mirror_certificates", schema=None) as batch_op:
        batch_op.create_index("ix_mirror_certificates_asset", ["asset_id", "id"], unique=False)
        batch_op.create_index("ix_mirror_certificates_country", ["country", "id"], unique=False)
        batch_op.create_index(
            "ix_mirror_certificates_fuel_country", ["fuel_code", "country", "id"], unique=False
        )
        batch_op.create_index("ix_mirror_certificates_owner", ["owner", "id"], unique=False)
        batch_op.create_index(
            "ix_mirror_certificates_period", ["period_start", "period_end"], unique=False
        )
        batch_op.create_index(
            "ix_mirror_certificates_reservation", ["reservation_id", "id"], unique=False
        )

    op.create_table(
        "mirror_claims",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("production_slice_id", sa.BigInteger(), nullable=False),
        sa.Column("consumption_slice_id", sa.BigInteger(), nullable=False),
        sa.Column("production_certificate_id", sa.BigInteger(), nullable=False),
        sa.Column("consumption_certificate_id", sa.BigInteger(), nullable=False),
        sa.Column("quantity_wh", sa.BigInteger(), nullable=False),
        sa.Column("claimant", sa.String(length=42), nullable=False),
        sa.Column("consumer", sa.String(length=42), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mirror_claims")),
    )
    with op.batch_alter_table("mirror_claims", schema=None) as batch_op:
        batch_op.create_index("ix_mirror_claims_claimant", ["claimant", "id"], unique=False)
        batch_op.create_index("ix_mirror_claims_consumer", ["consumer", "id"], unique=False)
        batch_op.create_index(
            "ix_mirror_claims_consumption_certificate", ["consumption_certificate_id"], unique=False
        )
        batch_op.create_index(
            "ix_mirror_claims_production_certificate", ["production_certificate_id"], unique=False
        )

    op.create_table(
        "mirror_cursor",
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("registry", sa.String(length=42), nullable=False),
        sa.Column("deployment_block", sa.BigInteger(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "registry", name=op.f("pk_mirror_cursor")),
    )
    op.create_table(
        "mirror_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("args", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mirror_events")),
        sa.UniqueConstraint(
            "chain_id",
            "tx_hash",
            "log_index",
            name=op.f("uq_mirror_events_chain_id_tx_hash_log_index"),
        ),
    )
    with op.batch_alter_table("mirror_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_mirror_events_block", ["chain_id", "block_number", "log_index"], unique=False
        )

    op.create_table(
        "mirror_operators",
        sa.Column("wallet", sa.String(length=42), nullable=False),
        sa.Column("operator", sa.String(length=42), nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("wallet", "operator", name=op.f("pk_mirror_operators")),
    )
    op.create_table(
        "mirror_slices",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("certificate_id", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=42), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("quantity_wh", sa.BigInteger(), nullable=False),
        sa.Column("parent_id", sa.BigInteger(), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mirror_slices")),
    )
    with op.batch_alter_table("mirror_slices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_mirror_slices_certificate", ["certificate_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_mirror_slices_owner_state", ["owner", "state", "id"], unique=False
        )
        batch_op.create_index("ix_mirror_slices_state", ["state", "id"], unique=False)

    op.create_table(
        "mirror_wallets",
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("active_slices", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_mirror_wallets")),
    )


def downgrade() -> None:
    op.drop_table("mirror_wallets")
    with op.batch_alter_table("mirror_slices", schema=None) as batch_op:
        batch_op.drop_index("ix_mirror_slices_state")
        batch_op.drop_index("ix_mirror_slices_owner_state")
        batch_op.drop_index("ix_mirror_slices_certificate")

    op.drop_table("mirror_slices")
    op.drop_table("mirror_operators")
    with op.batch_alter_table("mirror_events", schema=None) as batch_op:
        batch_op.drop_index("ix_mirror_events_block")

    op.drop_table("mirror_events")
    op.drop_table("mirror_cursor")
    with op.batch_alter_table("mirror_claims", schema=None) as batch_op:
        batch_op.drop_index("ix_mirror_claims_production_certificate")
        batch_op.drop_index("ix_mirror_claims_consumption_certificate")
        batch_op.drop_index("ix_mirror_claims_consumer")
        batch_op.drop_index("ix_mirror_claims_claimant")

    op.drop_table("mirror_claims")
    with op.batch_alter_table("mirror_certificates", schema=None) as batch_op:
        batch_op.drop_index("ix_mirror_certificates_reservation")
        batch_op.drop_index("ix_mirror_certificates_period")
        batch_op.drop_index("ix_mirror_certificates_owner")
        batch_op.drop_index("ix_mirror_certificates_fuel_country")
        batch_op.drop_index("ix_mirror_certificates_country")
        batch_op.drop_index("ix_mirror_certificates_asset")

    op.drop_table("mirror_certificates")
    op.drop_table("mirror_blocks")
