"""The advanced-claim planner (domain/advanced_claims.py): preference order, exact sums."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from granular.domain.advanced_claims import (
    Candidate,
    NotEnoughProduction,
    PlannedClaim,
    Wanted,
    plan,
    rank,
)

HOUR = timedelta(hours=1)
T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)


def candidate(slice_id: int, quantity_wh: int, offset_h: float = 0, **codes: str) -> Candidate:
    start = T0 + offset_h * HOUR
    return Candidate(slice_id, quantity_wh, start, start + HOUR, **codes)


def wanted(quantity_wh: int, **preferences: object) -> Wanted:
    return Wanted(quantity_wh, T0, T0 + HOUR, **preferences)  # type: ignore[arg-type]


def test_the_same_period_comes_before_an_overlap_before_any_other() -> None:
    slices = [candidate(1, 10, offset_h=5), candidate(2, 10, 0.5), candidate(3, 10, 0)]
    assert [c.production_slice_id for c in plan(wanted(30), slices)] == [3, 2, 1]


def test_a_larger_overlap_comes_first() -> None:
    slices = [candidate(1, 10, offset_h=0.75), candidate(2, 10, offset_h=-0.25)]
    assert [c.production_slice_id for c in plan(wanted(20), slices)] == [2, 1]


def test_fuel_then_technology_then_country_break_ties_then_the_older_slice() -> None:
    slices = [
        candidate(1, 10, fuel_code="ES100", tech_code="T1", country="DE"),
        candidate(2, 10, fuel_code="ES200", tech_code="T2", country="FR"),
        candidate(3, 10, fuel_code="ES200", tech_code="T1", country="DE"),
        candidate(4, 10, fuel_code="ES200", tech_code="T1", country="FR"),
        candidate(5, 10, fuel_code="ES200", tech_code="T1", country="FR"),
    ]
    preferred = wanted(50, fuel_code="ES200", tech_code="T1", country="FR")
    assert [c.production_slice_id for c in plan(preferred, slices)] == [4, 5, 3, 2, 1]


def test_the_last_slice_is_taken_in_part_so_the_plan_is_exact() -> None:
    slices = [candidate(1, 500), candidate(2, 300)]
    assert plan(wanted(600), slices) == [PlannedClaim(1, 500, True), PlannedClaim(2, 100, False)]
    assert plan(wanted(800), slices)[-1] == PlannedClaim(2, 300, True)


def test_1_wh_more_than_the_wallet_holds_is_refused() -> None:
    slices = [candidate(1, 500), candidate(2, 300)]
    with pytest.raises(NotEnoughProduction) as raised:
        plan(wanted(801), slices)
    assert raised.value.details["availableWh"] == 800


def test_required_overlap_leaves_out_other_periods() -> None:
    slices = [candidate(1, 500, offset_h=3), candidate(2, 100)]
    with pytest.raises(NotEnoughProduction):
        plan(wanted(200, require_overlap=True), slices)
    assert plan(wanted(200), slices)[0].production_slice_id == 2


@settings(max_examples=200, deadline=None)
@given(
    quantities=st.lists(st.integers(1, 1_000), min_size=1, max_size=12),
    offsets=st.lists(st.sampled_from([-2, -0.5, 0, 0.5, 3]), min_size=12, max_size=12),
    share=st.floats(0, 1),
)
def test_a_plan_sums_exactly_takes_each_slice_at_most_once_and_follows_the_rank(
    quantities: list[int], offsets: list[float], share: float
) -> None:
    slices = [candidate(i + 1, q, offsets[i]) for i, q in enumerate(quantities)]
    total = sum(quantities)
    target = max(1, min(total, round(total * share)))
    claims = plan(wanted(target), slices)
    assert sum(c.quantity_wh for c in claims) == target
    by_id = {c.slice_id: c for c in slices}
    assert len({c.production_slice_id for c in claims}) == len(claims)
    assert all(0 < c.quantity_wh <= by_id[c.production_slice_id].quantity_wh for c in claims)
    assert all(c.whole for c in claims[:-1])
    keys = [rank(by_id[c.production_slice_id], wanted(target)) for c in claims]
    assert keys == sorted(keys)
    taken = {c.production_slice_id for c in claims}
    if claims:
        worst = keys[-1]
        assert all(rank(c, wanted(target)) > worst for c in slices if c.slice_id not in taken)
