"""Every table module, imported so that Base.metadata knows them all (for Alembic)."""

from __future__ import annotations

from granular.adapters.db import (  # noqa: F401
    accounts,
    commands,
    device_groups,
    devices,
    headers,
    issuance,
    matching,
    mirror,
    outbox,
    readings,
    reservations,
)
