"""A reservation's target completes on settled volume, on anvil, SQLite and PostgreSQL.

The item that reaches the target reverts on chain (the issuer lost ISSUER_ROLE): the
reservation is not completed, its volume is failed, not counted; once the role is back the
next plan mints that volume again (with a late read's energy as leftover), the target is
reached when confirmed, and every Wh is counted once: on chain, in the items and in the
reservation's totals. A revert is retried after a backoff that doubles per revert of the
window. Also after the reservation's end, when every window was considered.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.anvil import Anvil
from granular.adapters.db.base import as_utc
from granular.adapters.db.issuance import IssuanceBatchRow, IssuanceItemRow
from granular.adapters.db.migrate import downgrade, upgrade
from granular.domain.reads import ReadKind
from granular.domain.windows import Frequency
from granular.services import issuance
from tests.integration.chain import Chain
from tests.integration.issuance_helpers import (
    add_device,
    certificate_of,
    context,
    issue_all,
    items,
    new_sender,
    on_chain,
    principal,
    reads,
    reservation_row,
    reserve,
    utc,
)
from tests.integration.outbox_helpers import _close_senders  # noqa: F401  (autouse)

ISSUER_ROLE = keccak(text="ISSUER_ROLE")
DAY = utc(2026, 6, 30)
H1 = utc(2026, 6, 30, 1)
TARGET_WH = 7_000
S = timedelta(seconds=1)


def _states(sessions: sessionmaker[Session], rid: int) -> dict[tuple[datetime, int], Any]:
    return {(i.window_start, i.sequence): (i.quantity_wh, i.state) for i in items(sessions, rid)}


@pytest.mark.parametrize(
    "end", [utc(2026, 7, 1), utc(2026, 6, 30, 2)], ids=["live", "after-its-end"]
)
def test_a_reverted_item_that_reached_the_target_is_issued_again_once(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
    end: datetime,
) -> None:
    issuer = issuer_account.address
    owner = principal(sessions, "plant", "device_owner")
    buyer_org = principal(sessions, "buyer", "buyer")
    device = add_device(sessions, owner, "d1", now=DAY)
    reads(
        sessions,
        owner,
        "d1",
        ReadKind.HISTORY,
        [(DAY, H1, 5_000), (H1, utc(2026, 6, 30, 1, 30), 6_000)],
        now=utc(2026, 6, 30, 1, 40),
    )
    rid = reserve(
        sessions,
        buyer_org,
        [device],
        frequency=Frequency.HOURLY,
        start=DAY,
        end=end,
        wallet=buyer,
        target_wh=TARGET_WH,
        now=utc(2026, 6, 30, 1, 40),
    )
    ctx = context(anvil, deployment, issuer)
    sender = new_sender(engine, anvil, issuer_account)

    # Hour 0 (5,000 Wh) is due first and confirmed: below the target.
    first_pass = utc(2026, 6, 30, 1, 10)
    issuance.plan(sessions=sessions, context=ctx, now=first_pass)
    assert issue_all(sessions, ctx, sender, first_pass).certificates == 1

    # Hour 1 reaches the target: 2,000 minted, 4,000 leftover. Planned is not settled.
    chain.send(chain.registry.functions.revokeRole(ISSUER_ROLE, issuer), issuer)
    second_pass = utc(2026, 6, 30, 3)
    planned = issuance.plan(sessions=sessions, context=ctx, now=second_pass)
    assert planned.items_planned == 2
    assert reservation_row(sessions, rid)[3] is None
    driven = issue_all(sessions, ctx, sender, second_pass)

    assert (driven.certificates, driven.failed) == (0, 1)
    assert not any("target" in w for w in planned.warnings + driven.warnings)
    states = _states(sessions, rid)
    assert states == {
        (DAY, 1): (5_000, "issued"),
        (H1, 1): (2_000, "reverted"),
        (H1, 2): (4_000, "leftover"),
    }
    [reverted] = [i for i in items(sessions, rid) if i.state == "reverted"]
    assert reverted.failure_code == "AccessControlUnauthorizedAccount"
    assert reservation_row(sessions, rid) == (5_000, 2_000, 4_000, None)

    # Retried after a backoff (60 s, doubling per revert of the window): held until then.
    def planned_at(moment: datetime) -> int:
        return issuance.plan(sessions=sessions, context=ctx, now=moment).items_planned

    retry = second_pass + 60 * S
    assert (planned_at(retry - S), planned_at(retry)) == (0, 1)
    assert issue_all(sessions, ctx, sender, retry).failed == 1  # the role is still revoked
    assert planned_at(retry + 119 * S) == 0
    assert reservation_row(sessions, rid) == (5_000, 2_000, 4_000, None)

    # The cause is removed and a late read arrives for hour 1: the reverted 2,000 is
    # minted again (sequence 4), the late 1,000 is beyond the target (sequence 5).
    chain.send(chain.registry.functions.grantRole(ISSUER_ROLE, issuer), issuer)
    reads(
        sessions,
        owner,
        "d1",
        ReadKind.HISTORY,
        [(utc(2026, 6, 30, 1, 30), utc(2026, 6, 30, 2), 1_000)],
        now=utc(2026, 6, 30, 3, 20),
    )
    third_pass = utc(2026, 6, 30, 3, 30)
    assert issuance.plan(sessions=sessions, context=ctx, now=third_pass).items_planned == 2
    assert reservation_row(sessions, rid)[3] is None  # in flight: not yet completed
    driven = issue_all(sessions, ctx, sender, third_pass)

    assert (driven.certificates, driven.failed) == (1, 0)
    assert driven.warnings == (
        f"reservation {rid}: target of 7000 Wh reached (7000 Wh confirmed on chain); "
        "the reservation completes",
    )
    assert _states(sessions, rid) == {
        (DAY, 1): (5_000, "issued"),
        (H1, 1): (2_000, "retried"),
        (H1, 2): (4_000, "leftover"),
        (H1, 3): (2_000, "retried"),
        (H1, 4): (2_000, "issued"),
        (H1, 5): (1_000, "leftover"),
    }
    # 12,000 Wh read = 7,000 issued + 5,000 leftover; retried items are counted nowhere.
    row = reservation_row(sessions, rid)
    assert (*row[:3], as_utc(row[3])) == (7_000, 0, 5_000, third_pass)
    minted = chain.registry.events.CertificateIssued().get_logs(from_block=0)
    issued = [i for i in items(sessions, rid) if i.state == "issued"]
    assert sorted(certificate_of(sessions, i.id) for i in issued) == sorted(
        e["args"]["certificateId"] for e in minted
    )
    quantities = [on_chain(chain.w3, chain.registry, e["args"]["certificateId"])[3] for e in minted]
    assert sum(quantities) == TARGET_WH
    # Completed by its target: nothing is planned again.
    assert issuance.plan(sessions=sessions, context=ctx, now=third_pass).items_planned == 0


def test_migration_0015_gives_items_failed_by_a_revert_back_to_planning(
    engine: Engine, sessions: sessionmaker[Session], buyer: str
) -> None:
    """Before 0015 an item isolated from a reverted batch was failed for good: it becomes
    reverted; a physical re-check failure and an already-issued batch's items stay failed."""
    owner = principal(sessions, "plant", "device_owner")
    device = add_device(sessions, owner, "d1", now=DAY)
    rid = reserve(
        sessions,
        principal(sessions, "buyer", "buyer"),
        [device],
        frequency=Frequency.HOURLY,
        start=DAY,
        end=utc(2026, 7, 1),
        wallet=buyer,
        now=utc(2026, 6, 30, 3),
    )
    with sessions.begin() as session:
        batch = IssuanceBatchRow(
            chain_id=1,
            batch_id="0x" + "11" * 32,
            idempotency_key="issuance:0x" + "11" * 32,
            tier="fast",
            state="failed",
            item_count=1,
            created_at=DAY,
            updated_at=DAY,
        )
        session.add(batch)
        session.flush()
        for sequence, (batch_row, code) in enumerate(
            [
                (batch.id, "CertificateRegistryWalletClosed"),
                (batch.id, "CertificateRegistryBatchAlreadyIssued"),
                (None, "max_energy_physical"),
            ],
            start=1,
        ):
            session.add(
                IssuanceItemRow(
                    reservation_id=rid,
                    device_id=device,
                    window_start=DAY,
                    sequence=sequence,
                    period_start=DAY,
                    period_end=H1,
                    kind="production",
                    quantity_wh=1_000,
                    owner=buyer,
                    state="failed",
                    batch_row_id=batch_row,
                    failure_code=code,
                    created_at=DAY,
                    updated_at=DAY,
                )
            )

    downgrade(engine, "0014")
    upgrade(engine)

    assert [(i.sequence, i.state) for i in items(sessions, rid)] == [
        (1, "reverted"),
        (2, "failed"),
        (3, "failed"),
    ]
