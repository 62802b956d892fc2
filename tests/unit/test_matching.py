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

W = datetime(2026, 6, 22, tzinfo=UTC)


def state(p: list[int], c: list[int], matched: int = 0, first: int = 1) -> WindowState:
    production = [Available(first + i, first + i, q) for i, q in enumerate(p)]
    consumption = [Available(first + 100 + i, first + 100 + i, q) for i, q in enumerate(c)]
    return WindowState(W, sum(p), sum(c), matched, production, consumption)


def test_equal_slices_are_claimed_whole_with_0_wh() -> None:
    assert plan_window(state([5_000], [5_000]), 10).entries == (Entry(1, 101, 0, 5_000),)


def test_surplus_production_is_split_once_and_the_window_stops_at_the_remainder() -> None:
    window = plan_window(state([3_000, 5_000], [6_000]), 10)
    # Solar (certificate 1) first, whole; the consumption slice keeps a remainder whose id
    # only the chain knows: the next pass goes on from it.
    assert window.entries == (Entry(1, 101, 3_000, 3_000),)
    nxt = WindowState(
        W, 8_000, 6_000, 3_000, [Available(2, 2, 5_000)], [Available(105, 101, 3_000)]
    )
    assert plan_window(nxt, 10).entries == (Entry(2, 105, 3_000, 3_000),)
    assert still_needed_wh(WindowState(W, 8_000, 6_000, 6_000)) == 0


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
    """Passes applied to a model of the wallet: the total is min(P, C), never more."""
    production = [[i, q] for i, q in enumerate(p)]
    consumption = [[100 + i, q] for i, q in enumerate(c)]
    matched = 0
    next_id = 1_000
    for _ in range(30):
        s = WindowState(
            W,
            sum(p),
            sum(c),
            matched,
            [Available(i, i if i < 100 else 0, q) for i, q in production if q],
            [Available(i, 100, q) for i, q in consumption if q],
        )
        window = plan_window(s, 50)
        if not window.entries:
            break
        for e in window.entries:
            for side, sid in (
                (production, e.production_slice_id),
                (consumption, e.consumption_slice_id),
            ):
                row = next(r for r in side if r[0] == sid)
                assert e.claimed_wh <= row[1]
                left = row[1] - e.claimed_wh
                row[1] = 0
                if left:
                    side.append([next_id, left])
                    next_id += 1
        matched += window.claimed_wh
    assert matched == min(sum(p), sum(c))


def test_the_score_is_claimed_over_consumed() -> None:
    assert score(3, 4) == Fraction(3, 4)
    assert score(0, 0) is None
