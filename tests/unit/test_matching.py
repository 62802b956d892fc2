"""The pure matching plan (domain.matching): exact sums, certificate id order, splits only
where needed, top-ups by the difference, the batch cap, the score."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from granular.domain.matching import (
    Available,
    Entry,
    WindowState,
    plan,
    plan_window,
    score,
    still_needed_wh,
)
from granular.domain.slices import Claim, Issuance, Kind, RegistryModel, SliceState

W = datetime(2026, 6, 22, tzinfo=UTC)
ISSUER, OWNER = "0xIssuer", "0xBuyer"


def state(p: list[int], c: list[int], matched: int = 0, first: int = 1) -> WindowState:
    production = [Available(first + i, first + i, q) for i, q in enumerate(p)]
    consumption = [Available(first + 100 + i, first + 100 + i, q) for i, q in enumerate(c)]
    return WindowState(W, sum(p), sum(c), matched, production, consumption)


def test_equal_slices_are_claimed_whole_with_0_wh() -> None:
    assert plan_window(state([5_000], [5_000]), 10).entries == (Entry(1, 101, 0, 5_000),)


def test_a_split_slice_goes_on_as_its_remainder_named_0_in_the_same_batch() -> None:
    window = plan_window(state([3_000, 5_000], [6_000]), 10)
    # Solar (certificate 1) first, whole; the consumption slice keeps a remainder whose id
    # only the chain knows: the next entry names it 0 and takes 3,000 of wind (split too).
    assert window.entries == (Entry(1, 101, 3_000, 3_000), Entry(2, 0, 3_000, 3_000))
    assert window.claimed_wh == 6_000
    # A pass that starts from the remainder (the mirror shows it) names it by its id.
    nxt = WindowState(
        W, 8_000, 6_000, 3_000, [Available(2, 2, 5_000)], [Available(105, 101, 3_000)]
    )
    assert plan_window(nxt, 10).entries == (Entry(2, 105, 3_000, 3_000),)
    assert still_needed_wh(WindowState(W, 8_000, 6_000, 6_000)) == 0


def test_remainders_on_both_sides_chain_through_the_entries() -> None:
    # production 1,000 then 4,000; consumption 2,500 then 2,500
    window = plan_window(state([1_000, 4_000], [2_500, 2_500]), 10)
    assert window.entries == (
        Entry(1, 101, 1_000, 1_000),  # consumption split: 1,500 left
        Entry(2, 0, 1_500, 1_500),  # production 2 split: 2,500 left; consumption done
        Entry(0, 102, 0, 2_500),  # the production remainder and consumption 2, equal wholes
    )


def test_production_in_certificate_id_order_whatever_the_input_order() -> None:
    s = WindowState(
        W,
        2_000,
        2_000,
        0,
        [Available(9, 7, 1_000), Available(3, 2, 1_000)],
        [Available(50, 50, 1_000), Available(51, 51, 1_000)],
    )
    assert [e.production_slice_id for e in plan_window(s, 10).entries] == [3, 9]


def test_a_top_up_grows_the_match_by_the_difference_only() -> None:
    s = WindowState(W, 5_000, 3_500, 1_200, [Available(7, 1, 3_800)], [Available(9, 9, 2_300)])
    assert plan_window(s, 10).entries == (Entry(7, 9, 2_300, 2_300),)
    assert (
        plan_window(WindowState(W, 5_000, 3_500, 3_500, s.production, s.consumption), 10).entries
        == ()
    )


def test_nothing_held_nothing_claimed_and_the_batch_cap_holds() -> None:
    assert (
        plan_window(WindowState(W, 5_000, 5_000, 0, [], [Available(2, 2, 5_000)]), 10).entries == ()
    )
    states = [
        WindowState(
            W + timedelta(hours=h),
            1,
            1,
            0,
            [Available(h * 2 + 1, h * 2 + 1, 1)],
            [Available(h * 2 + 2, h * 2 + 2, 1)],
        )
        for h in range(5)
    ]
    plans = plan(states, 3)
    assert [p.window_start for p in plans] == [W, W + timedelta(hours=1), W + timedelta(hours=2)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 10_000), max_size=6),
    st.lists(st.integers(1, 10_000), max_size=6),
)
def test_repeated_passes_claim_exactly_the_min(p: list[int], c: list[int]) -> None:
    """Passes run on the registry's own model (domain.slices, which the property test holds
    to the contract), batch cap 3 so windows span passes: the total is min(P, C), never
    more, every batch is accepted, and a window that fits one batch is done in one pass."""
    model = RegistryModel(issuers={ISSUER})
    items = [Issuance(OWNER, Kind.PRODUCTION, q, b"p" * 32) for q in p]
    items += [Issuance(OWNER, Kind.CONSUMPTION, q, b"c" * 32) for q in c]
    if items:
        model.issue_batch(ISSUER, b"\x01" * 32, items)
    matched = 0
    passes = 0
    for _ in range(30):
        active = [s for s in model.slices.values() if s.state == SliceState.ACTIVE]
        s = WindowState(
            W,
            sum(p),
            sum(c),
            matched,
            [
                Available(a.slice_id, a.certificate_id, a.quantity_wh)
                for a in active
                if a.kind == Kind.PRODUCTION
            ],
            [
                Available(a.slice_id, a.certificate_id, a.quantity_wh)
                for a in active
                if a.kind == Kind.CONSUMPTION
            ],
        )
        window = plan_window(s, 3)
        if not window.entries:
            break
        passes += 1
        model.claim_batch(
            OWNER,
            [
                Claim(e.production_slice_id, e.consumption_slice_id, e.quantity_wh)
                for e in window.entries
            ],
        )
        matched += window.claimed_wh
    assert matched == min(sum(p), sum(c))
    claimed = sum(s.quantity_wh for s in model.slices.values() if s.state == SliceState.CLAIMED)
    assert claimed == 2 * matched
    if len(p) + len(c) <= 4:  # at most 3 entries: one pass
        assert passes <= 1


def test_the_score_is_claimed_over_consumed() -> None:
    assert score(3, 4) == Fraction(3, 4)
    assert score(0, 0) is None
