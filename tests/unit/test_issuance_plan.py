"""The pure issuance planning: per-window items, top-ups, the target cap, the physical
re-check, a reverted item's volume planned again, the target settled on confirmed volume,
batch ids; and Hypothesis properties: energy conserved across windows, nothing issued
twice, the target never exceeded without authority, reverted volume planned once."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from granular.domain.devices import DeviceKind
from granular.domain.headers import canonical_json
from granular.domain.issuance import (
    Accounted,
    Capacity,
    DeviceFacts,
    DeviceWindow,
    ItemKey,
    ItemOutcome,
    PlannedItem,
    RevertedItem,
    TargetSettlement,
    TargetState,
    batch_id,
    build_header,
    due_for_retry,
    halves,
    idempotency_key,
    max_batch_items,
    plan_reservation,
    retry_at,
    settle_target,
)

H0 = datetime(2026, 6, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


def window(
    device: int, hour: int, energy_wh: int, kind: DeviceKind = DeviceKind.PRODUCTION
) -> DeviceWindow:
    start = H0 + hour * HOUR
    return DeviceWindow(
        device, kind, start, start, start + HOUR, energy_wh, (1,) if energy_wh else ()
    )


def target(volume: int = 10**12, authority: bool = False, counted: int = 0) -> TargetState:
    return TargetState(1, volume, authority, counted)


CAPACITY = {1: Capacity(11, 10_000), 2: Capacity(12, 10_000)}


def accounted_after(
    items: tuple[PlannedItem, ...],
    before: dict[tuple[int, datetime], Accounted] | None = None,
    reverted: frozenset[ItemKey] = frozenset(),
) -> dict[tuple[int, datetime], Accounted]:
    """What the service's `accounted` reads once `items` are written: a reverted item holds
    nothing but keeps its sequence."""
    result = dict(before or {})
    for item in items:
        key = (item.key.device_id, item.key.window_start)
        old = result.get(key, Accounted())
        held = 0 if item.key in reverted else item.quantity_wh
        result[key] = Accounted(old.total_wh + held, max(old.last_sequence, item.key.sequence))
    return result


def counted(items: tuple[PlannedItem, ...], reverted: frozenset[ItemKey] = frozenset()) -> int:
    """Production minted or in flight: what the service's `counted_production_wh` reads."""
    return sum(
        i.quantity_wh
        for i in items
        if i.outcome is ItemOutcome.MINT
        and i.kind is DeviceKind.PRODUCTION
        and i.key not in reverted
    )


def test_each_window_with_energy_is_one_item_and_a_window_without_data_is_reported() -> None:
    plan = plan_reservation(target(), [window(1, 0, 5_000), window(1, 1, 0)], {}, CAPACITY)
    assert [(i.key.sequence, i.quantity_wh, i.outcome) for i in plan.items] == [
        (1, 5_000, ItemOutcome.MINT)
    ]
    assert [w.window_start for w in plan.empty_windows] == [H0 + HOUR]


def test_a_late_read_is_a_top_up_with_the_next_sequence_never_a_reissue() -> None:
    before = {(1, H0): Accounted(2_000, 1)}
    plan = plan_reservation(target(counted=2_000), [window(1, 0, 3_000)], before, CAPACITY)
    [item] = plan.items
    assert (item.key.sequence, item.quantity_wh) == (2, 1_000)
    assert plan_reservation(target(), [window(1, 0, 2_000)], before, CAPACITY).items == ()


def test_without_authority_issuance_stops_exactly_at_the_target() -> None:
    plan = plan_reservation(target(7_000), [window(1, 0, 5_000), window(1, 1, 6_000)], {}, CAPACITY)
    assert [(i.key.window_start, i.key.sequence, i.quantity_wh, i.outcome) for i in plan.items] == [
        (H0, 1, 5_000, ItemOutcome.MINT),
        (H0 + HOUR, 1, 2_000, ItemOutcome.MINT),
        (H0 + HOUR, 2, 4_000, ItemOutcome.LEFTOVER),
    ]
    assert plan.counted_wh == 7_000


def test_with_authority_issuance_goes_on_and_the_buyer_is_still_told() -> None:
    plan = plan_reservation(
        target(7_000, authority=True), [window(1, 0, 5_000), window(1, 1, 6_000)], {}, CAPACITY
    )
    assert [i.quantity_wh for i in plan.items] == [5_000, 6_000]
    assert plan.counted_wh == 11_000


def test_consumption_is_not_counted_against_the_target() -> None:
    plan = plan_reservation(
        target(1_000), [window(2, 0, 5_000, DeviceKind.CONSUMPTION)], {}, CAPACITY
    )
    assert [(i.kind, i.quantity_wh, i.outcome) for i in plan.items] == [
        (DeviceKind.CONSUMPTION, 5_000, ItemOutcome.MINT)
    ]
    assert plan.counted_wh == 0


def test_a_reverted_item_is_planned_again_once_with_a_late_read_and_the_target_still_exact() -> (
    None
):
    """Target 7,000: 5,000 in hour 0, then 2,000 minted and 4,000 leftover in hour 1. The
    2,000 reverts on chain; a late read adds 1,000 to hour 1. The next plan mints the
    2,000 again (sequence 3) and the late 1,000 is leftover (sequence 4): 7,000 minted,
    5,000 leftover, 12,000 read, nothing counted twice."""
    first = plan_reservation(
        target(7_000), [window(1, 0, 5_000), window(1, 1, 6_000)], {}, CAPACITY
    )
    [_, reaching, _] = first.items
    assert (reaching.key.sequence, reaching.quantity_wh) == (1, 2_000)
    reverted = frozenset({reaching.key})
    after = accounted_after(first.items, reverted=reverted)
    assert after[(1, H0 + HOUR)] == Accounted(4_000, 2)

    second = plan_reservation(
        target(7_000, counted=counted(first.items, reverted)),
        [window(1, 0, 5_000), window(1, 1, 7_000)],
        after,
        CAPACITY,
    )

    assert [(i.key.sequence, i.quantity_wh, i.outcome) for i in second.items] == [
        (3, 2_000, ItemOutcome.MINT),
        (4, 1_000, ItemOutcome.LEFTOVER),
    ]
    assert second.counted_wh == 7_000
    assert (
        plan_reservation(
            target(7_000, counted=second.counted_wh),
            [window(1, 0, 5_000), window(1, 1, 7_000)],
            accounted_after(second.items, after),
            CAPACITY,
        ).items
        == ()
    )


@pytest.mark.parametrize(
    ("reverts", "wait_s"),
    [(1, 60), (2, 120), (3, 240), (40, 86_400)],
    ids=["first-revert", "second", "third", "capped"],
)
def test_a_reverted_item_is_retried_after_a_backoff_that_doubles_per_revert(
    reverts: int, wait_s: int
) -> None:
    item = RevertedItem(7, H0, reverts)
    due = retry_at(item, initial_s=60, max_s=86_400)
    assert due == H0 + timedelta(seconds=wait_s)
    waiting = RevertedItem(8, H0 + timedelta(seconds=1), reverts)
    assert due_for_retry([item, waiting], due, initial_s=60, max_s=86_400) == (7,)


@pytest.mark.parametrize(
    ("settled_wh", "authority", "reached_before", "expected"),
    [
        (6_999, False, False, TargetSettlement(reached=False, completes=False)),
        (7_000, False, False, TargetSettlement(reached=True, completes=True)),
        (7_000, True, False, TargetSettlement(reached=True, completes=False)),
        (9_000, True, True, TargetSettlement(reached=False, completes=False)),
    ],
    ids=["1-Wh-short", "exactly-at-the-target", "with-authority", "told-once"],
)
def test_the_target_is_settled_on_confirmed_volume_at_its_edge(
    settled_wh: int, authority: bool, reached_before: bool, expected: TargetSettlement
) -> None:
    assert (
        settle_target(
            target_volume_wh=7_000,
            authority_to_exceed=authority,
            settled_wh=settled_wh,
            reached_before=reached_before,
        )
        == expected
    )


@pytest.mark.parametrize(
    ("energy_wh", "outcome"),
    [(10_000, ItemOutcome.MINT), (10_001, ItemOutcome.FAILED)],
    ids=["at-the-bound", "1-Wh-over"],
)
def test_the_physical_recheck_at_its_edge(energy_wh: int, outcome: ItemOutcome) -> None:
    [item] = plan_reservation(target(), [window(1, 0, energy_wh)], {}, CAPACITY).items
    assert item.outcome is outcome
    assert item.rule == {
        "rule": "physical",
        "energyWh": energy_wh,
        "boundWh": 10_000,
        "capacityW": 10_000,
        "passed": outcome is ItemOutcome.MINT,
    }
    if outcome is ItemOutcome.FAILED:
        assert item.reason is not None and "physical bound of 10000 Wh" in item.reason


def test_batch_ids_depend_on_the_item_keys_only_not_their_order() -> None:
    keys = [ItemKey(1, d, H0, 1) for d in (3, 1, 2)]
    assert batch_id(keys) == batch_id(sorted(keys))
    assert batch_id(keys) != batch_id(keys[:2])
    assert idempotency_key(batch_id(keys)) == "issuance:0x" + batch_id(keys).hex()
    assert len(idempotency_key(batch_id(keys))) <= 200
    assert halves([1, 2, 3]) == ([1], [2, 3])
    assert 500 <= max_batch_items() < 611  # README: 611 is the largest under 16,777,216 gas


def test_the_header_is_canonical_with_integers_only() -> None:
    [item] = plan_reservation(target(), [window(1, 0, 5_000)], {}, CAPACITY).items
    facts = DeviceFacts(1, 7, "plant-1", "KEN", "ES100", "TC110", None, "-1.28", "36.82")
    header = build_header(item=item, device=facts, registry="granular", wallet="0xabc", issued=H0)
    assert header["quantity"] == 5_000 and header["periodStart"] == "2026-06-30T00:00:00Z"
    assert header["type"] == "REC" and header["version"] == "v1.0"
    assert header["isStandardIssuanceRequested"] == "I-REC"
    assert canonical_json(header).startswith(b'{"address":')


energies = st.lists(st.integers(min_value=0, max_value=12_000), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    first=energies,
    late=energies,
    volume=st.integers(min_value=1, max_value=60_000),
    authority=st.booleans(),
)
def test_planning_twice_conserves_energy_never_issues_twice_and_respects_the_target(
    first: list[int], late: list[int], volume: int, authority: bool
) -> None:
    """Two passes: the first with some energy per window, the second after late reads (at
    least as much in each window). After both, each window's items sum to its energy; a
    third pass plans nothing; minted production never exceeds the target without authority."""
    windows_1 = [window(1, h, wh) for h, wh in enumerate(first)]
    grown = [max(a, a + b) for a, b in zip(first, late + [0] * len(first), strict=False)]
    windows_2 = [window(1, h, wh) for h, wh in enumerate(grown)]
    plan_1 = plan_reservation(target(volume, authority), windows_1, {}, CAPACITY)
    after_1 = accounted_after(plan_1.items)
    plan_2 = plan_reservation(
        TargetState(1, volume, authority, plan_1.counted_wh),
        windows_2,
        after_1,
        CAPACITY,
    )
    after_2 = accounted_after(plan_2.items, after_1)
    every = plan_1.items + plan_2.items
    per_window: dict[datetime, int] = defaultdict(int)
    for item in every:
        per_window[item.key.window_start] += item.quantity_wh
    for w in windows_2:
        assert per_window.get(w.window_start, 0) == w.energy_wh  # energy conserved
    keys = [i.key for i in every]
    assert len(keys) == len(set(keys))  # never the same key twice
    assert all(i.quantity_wh > 0 for i in every)
    third = plan_reservation(
        TargetState(1, volume, authority, plan_2.counted_wh), windows_2, after_2, CAPACITY
    )
    assert third.items == ()  # nothing issued twice
    minted = sum(
        i.quantity_wh
        for i in every
        if i.outcome is ItemOutcome.MINT and i.kind is DeviceKind.PRODUCTION
    )
    if not authority:
        assert minted <= volume
        if all(w.energy_wh <= 10_000 for w in windows_2):  # nothing failed the re-check
            assert minted == min(volume, sum(w.energy_wh for w in windows_2))


@settings(max_examples=200, deadline=None)
@given(
    first=energies,
    late=energies,
    volume=st.integers(min_value=1, max_value=60_000),
    authority=st.booleans(),
    reverts=st.lists(st.booleans(), min_size=16, max_size=16),
)
def test_reverted_volume_is_planned_again_exactly_once(
    first: list[int], late: list[int], volume: int, authority: bool, reverts: list[bool]
) -> None:
    """Some minted items of a first plan revert on chain; late reads arrive; a second plan
    runs, then its own items confirm. Each window's accounted items (reverted excluded) sum
    to its energy, no key repeats, a third plan plans nothing, and without authority the
    confirmed production is exactly min(target, energy) when nothing failed the re-check."""
    windows_1 = [window(1, h, wh) for h, wh in enumerate(first)]
    grown = [a + b for a, b in zip(first, late + [0] * len(first), strict=False)]
    windows_2 = [window(1, h, wh) for h, wh in enumerate(grown)]
    plan_1 = plan_reservation(target(volume, authority), windows_1, {}, CAPACITY)
    minted_1 = [i for i in plan_1.items if i.outcome is ItemOutcome.MINT]
    reverted = frozenset(i.key for i, r in zip(minted_1, reverts, strict=False) if r)
    after_1 = accounted_after(plan_1.items, reverted=reverted)
    plan_2 = plan_reservation(
        target(volume, authority, counted(plan_1.items, reverted)), windows_2, after_1, CAPACITY
    )
    after_2 = accounted_after(plan_2.items, after_1)
    every = plan_1.items + plan_2.items
    keys = [i.key for i in every]
    assert len(keys) == len(set(keys))
    held: dict[datetime, int] = defaultdict(int)
    for item in every:
        if item.key not in reverted:
            held[item.key.window_start] += item.quantity_wh
    for w in windows_2:
        assert held.get(w.window_start, 0) == w.energy_wh  # every Wh read held once
    settled = counted(every, reverted)
    assert settled == plan_2.counted_wh
    third = plan_reservation(target(volume, authority, settled), windows_2, after_2, CAPACITY)
    assert third.items == ()
    if not authority:
        assert settled <= volume
        if all(w.energy_wh <= 10_000 for w in windows_2):
            assert settled == min(volume, sum(w.energy_wh for w in windows_2))
