"""reverted issuance items: a revert on chain gives the volume back to planning

Revision ID: 0015
Revises: 0014

Data only (`issuance_items.state` is a string): an item isolated from a reverted batch was
`failed` for good; it is now `reverted` (its volume is planned again, then the item is
`retried`). Items that failed the physical re-check (no batch) or whose batch the registry
reports issued with other events (something is on chain) stay `failed`. Reservations
already completed by a planned target stay completed: their devices may be released.
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_ALREADY_ISSUED = "CertificateRegistryBatchAlreadyIssued"


def upgrade() -> None:
    op.execute(
        "UPDATE issuance_items SET state = 'reverted' "
        "WHERE state = 'failed' AND batch_row_id IS NOT NULL "
        f"AND (failure_code IS NULL OR failure_code <> '{_ALREADY_ISSUED}')"
    )


def downgrade() -> None:
    # A retried item's volume is in a later item: the old code counts it as failed too.
    op.execute("UPDATE issuance_items SET state = 'failed' WHERE state IN ('reverted', 'retried')")
