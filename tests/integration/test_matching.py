"""Matching claims on anvil, on SQLite and PostgreSQL (issue 9): a week of hourly
production and consumption gives the hand-computed claims and score; surplus stays Active;
the deficit is reported; a late read tops up; a hand-moved slice is skipped; no approval
means no claim."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction
from typing import Any

from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.anvil import Anvil
from granular.adapters.db.mirror import MirrorClaimRow
from granular.adapters.db.outbox import TxRequest
from granular.domain.reads import ReadKind
from granular.services import matching
from tests.integration.chain import Chain
from tests.integration.issuance_helpers import principal, reads, utc
from tests.integration.matching_helpers import (
    HOUR,
    approve,
    confirmed_by_window,
    issue,
    make_fleet,
    match_all,
    mirror_slices,
)
from tests.integration.outbox_helpers import _close_senders  # noqa: F401  (autouse)

START = utc(2026, 6, 22)  # a Monday
NOW = utc(2026, 6, 29, 3)  # every window of the week is due
ACTIVE, CLAIMED = 1, 3


def solar(i: int) -> int:
    hour, day = i % 24, i // 24
    return max(0, 6 - abs(12 - hour)) * 1_000 * (1 + day % 3)  # 0 at night


def wind(i: int) -> int:
    return 2_000 + (i * 37) % 5_000


def site(i: int) -> int:
    return 6_000 + (i * 53) % 4_000


def fleet_of(fixtures: dict[str, Any], **overrides: Any) -> Any:
    arguments = {
        "start": START,
        "hours": 168,
        "solar": solar,
        "wind": wind,
        "site": site,
        "now": NOW,
        **overrides,
    }
    return make_fleet(**fixtures, **arguments)


def _fixtures(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
) -> dict[str, Any]:
    return {
        "engine": engine,
        "sessions": sessions,
        "anvil": anvil,
        "chain": chain,
        "deployment": deployment,
        "issuer_account": issuer_account,
        "wallet": buyer,
    }


def test_a_week_of_hourly_windows_gives_the_hand_computed_claims_and_score(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
) -> None:
    fixtures = _fixtures(engine, sessions, anvil, chain, deployment, issuer_account, buyer)
    fleet = fleet_of(fixtures, batch_size=500)
    approve(chain, buyer, issuer_account.address)

    done = match_all(sessions, fleet, NOW)

    expected = {w: min(solar(i) + wind(i), site(i)) for i, w in enumerate(fleet.windows)}
    assert confirmed_by_window(sessions, fleet.reservation_id) == expected
    assert done.matched_wh == sum(expected.values())
    # Some windows have more production than consumption, some less: both cases are here.
    assert any(solar(i) + wind(i) > site(i) for i in range(168))
    assert any(solar(i) + wind(i) < site(i) for i in range(168))
    with sessions() as session:
        on_chain = session.scalar(select(func.sum(MirrorClaimRow.quantity_wh)))
    assert on_chain == sum(expected.values())
    slices = mirror_slices(sessions)
    produced = sum(solar(i) + wind(i) for i in range(168))
    consumed = sum(site(i) for i in range(168))
    active = {0: 0, 1: 0}
    for _, _, owner, kind, state, wh in slices:
        assert owner == buyer
        if state == ACTIVE:
            active[kind] += wh
    assert active[0] == produced - sum(expected.values())  # surplus stays Active
    assert active[1] == consumed - sum(expected.values())  # the deficit
    status = matching.status_of(sessions=sessions, reservation_id=fleet.reservation_id)
    assert status is not None and status.state is matching.MatchingState.UP_TO_DATE
    assert status.claimed_wh == sum(expected.values())
    assert status.deficit_wh == consumed - sum(expected.values())
    assert status.surplus_wh == produced - sum(expected.values())
    score = Fraction(sum(expected.values()), consumed)
    assert status.score == f"{int(score * 10_000) // 10_000}.{int(score * 10_000) % 10_000:04d}"
    # Claims came in few transactions: one claimBatch per reservation pass.
    with sessions() as session:
        batches = session.scalar(
            select(func.count(TxRequest.id)).where(TxRequest.idempotency_key.like("matching:%"))
        )
    assert batches == done.passes - 1
    # A split slice goes on as its remainder (slice 0) in the same batch, so the splits cost
    # no extra pass: the week's 225 claims, splits included, fit one batch of 500.
    assert (batches, done.claims) == (1, 225)
    # A further pass claims nothing.
    again = matching.claim(sessions=sessions, context=fleet.matching, now=NOW)
    assert again.claims_submitted == 0


def test_no_approval_means_no_claim_and_the_reservation_says_why(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
) -> None:
    fixtures = _fixtures(engine, sessions, anvil, chain, deployment, issuer_account, buyer)
    fleet = fleet_of(fixtures, hours=3)

    report = matching.claim(sessions=sessions, context=fleet.matching, now=NOW)

    assert (report.claims_submitted, report.waiting_for_operator) == (0, 1)
    status = matching.status_of(sessions=sessions, reservation_id=fleet.reservation_id)
    assert status is not None and status.state is matching.MatchingState.WAITING_FOR_OPERATOR
    assert "operator" in status.detail and status.claimed_wh == 0
    with sessions() as session:
        assert not session.scalar(
            select(TxRequest.id).where(TxRequest.idempotency_key.like("matching:%"))
        )
    assert all(state == ACTIVE for *_, state, _ in mirror_slices(sessions))
    approve(chain, buyer, issuer_account.address)
    match_all(sessions, fleet, NOW)
    assert sum(confirmed_by_window(sessions, fleet.reservation_id).values()) == sum(
        min(solar(i) + wind(i), site(i)) for i in range(3)
    )


def test_a_late_read_tops_up_the_window_by_the_difference_never_reclaims(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
) -> None:
    fixtures = _fixtures(engine, sessions, anvil, chain, deployment, issuer_account, buyer)
    # Window 0: 5,000 Wh production, consumption read for the first half hour only.
    start = utc(2026, 6, 28, 0)
    fleet = fleet_of(
        fixtures,
        start=start,
        hours=1,
        solar=lambda i: 0,
        wind=lambda i: 5_000,
        site=lambda i: 0,
    )
    meter_owner = principal(sessions, "buyer", "device_owner")
    half = start + HOUR / 2
    reads(sessions, meter_owner, "site", ReadKind.HISTORY, [(start, half, 1_200)], now=NOW)
    issue(sessions, fleet, NOW)
    approve(chain, buyer, issuer_account.address)
    match_all(sessions, fleet, NOW)
    assert confirmed_by_window(sessions, fleet.reservation_id) == {start: 1_200}

    # The rest of the hour arrives late: a top-up consumption certificate of 2,300 Wh.
    reads(sessions, meter_owner, "site", ReadKind.HISTORY, [(half, start + HOUR, 2_300)], now=NOW)
    later = NOW + timedelta(hours=1)
    issue(sessions, fleet, later)
    match_all(sessions, fleet, later)

    assert confirmed_by_window(sessions, fleet.reservation_id) == {start: 3_500}
    with sessions() as session:
        claims = session.execute(
            select(MirrorClaimRow.quantity_wh).order_by(MirrorClaimRow.id)
        ).all()
    assert [wh for (wh,) in claims] == [1_200, 2_300]  # grown by the difference
    active_production = [
        wh for _, _, _, kind, state, wh in mirror_slices(sessions) if kind == 0 and state == ACTIVE
    ]
    assert active_production == [1_500]


def test_a_slice_the_holder_moved_by_hand_is_skipped_never_reverted(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
    stranger: str,
) -> None:
    fixtures = _fixtures(engine, sessions, anvil, chain, deployment, issuer_account, buyer)
    fleet = fleet_of(
        fixtures,
        hours=1,
        start=utc(2026, 6, 22, 12),
        solar=lambda i: 4_000,
        wind=lambda i: 3_000,
        site=lambda i: 6_000,
    )
    slices = mirror_slices(sessions)
    solar_slice = next(s for s in slices if s[3] == 0 and s[5] == 4_000)
    chain.send(chain.registry.functions.transfer(solar_slice[0], stranger), buyer)
    approve(chain, buyer, issuer_account.address)

    match_all(sessions, fleet, NOW)

    # Only the wind certificate was left to claim: 3,000 Wh, the rest of the site is deficit.
    assert confirmed_by_window(sessions, fleet.reservation_id) == {utc(2026, 6, 22, 12): 3_000}
    moved = chain.registry.functions.sliceOf(solar_slice[0]).call()
    assert (moved[0], moved[2], moved[3]) == (stranger, ACTIVE, 4_000)
    status = matching.status_of(sessions=sessions, reservation_id=fleet.reservation_id)
    assert status is not None and status.deficit_wh == 3_000


def test_whole_slice_claims_alone_are_mirrored_with_the_wallet_counters(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
) -> None:
    """Equal production and consumption: one whole claim (0 Wh), so the batch's events are
    SliceClaimed only; the indexer loads their owners' counters (it inserted a second
    wallet row before)."""
    fixtures = _fixtures(engine, sessions, anvil, chain, deployment, issuer_account, buyer)
    fleet = fleet_of(
        fixtures, hours=2, solar=lambda i: 0, wind=lambda i: 5_000, site=lambda i: 5_000
    )
    approve(chain, buyer, issuer_account.address)
    match_all(sessions, fleet, NOW)
    assert sum(confirmed_by_window(sessions, fleet.reservation_id).values()) == 10_000
    from granular.adapters.db.mirror import MirrorWalletRow

    with sessions() as session:
        wallet = session.get(MirrorWalletRow, buyer)
    assert wallet is not None and wallet.active_slices == 0
    assert wallet.active_slices == chain.registry.functions.walletOf(buyer).call()[1]


def test_only_the_holder_of_the_matching_lease_matches(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
) -> None:
    fixtures = _fixtures(engine, sessions, anvil, chain, deployment, issuer_account, buyer)
    fleet = fleet_of(fixtures, hours=2)
    approve(chain, buyer, issuer_account.address)
    from tests.integration.matching_helpers import index

    index(sessions, fleet, NOW)
    holder = matching.matching_lease(engine, 31337)
    other = matching.matching_lease(engine, 31337)
    try:
        assert holder.acquire()
        idle = matching.claim(sessions=sessions, context=fleet.matching, now=NOW, lease=other)
        assert idle.claims_submitted == 0 and idle.reservations == 0
        busy = matching.claim(sessions=sessions, context=fleet.matching, now=NOW, lease=holder)
        assert busy.claims_submitted > 0
    finally:
        holder.release()
        other.release()
