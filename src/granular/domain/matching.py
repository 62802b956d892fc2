"""Matching claims (DESIGN.md §4 "Matching claims"): which claimBatch entries a window gets.

For one window of a reservation, in this order:

1. the window's target is `min(production_wh, consumption_wh)` of its certificates (top-ups
   included); what earlier passes claimed (`matched_wh`) is subtracted: a late read grows the
   match by the difference, nothing is claimed twice;
2. production slices are taken in certificate id order (then slice id), consumption slices
   likewise; each entry claims `min(production left, consumption left, still needed)`;
   an entry that uses both slices whole and equal says 0 Wh (the contract's "equal whole"),
   any other says its quantity (the contract splits only the side that needs it);
3. a slice split by an entry leaves a remainder whose id the chain assigns when the batch
   runs; the next entry names it as slice 0 (claimBatch: "the remainder the previous
   entry's split of that side left"), so a window is matched whole in one pass. The sums
   are exact either way.

Only slices the reservation wallet still holds Active are offered (the service reads them
from the mirror): a slice moved or claimed by hand since issuance is skipped, never
reverted. Pure: values in, values out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction


@dataclass(frozen=True, slots=True)
class Available:
    """An Active slice the wallet holds, of one of the window's certificates."""

    slice_id: int
    certificate_id: int
    quantity_wh: int


@dataclass(frozen=True, slots=True)
class WindowState:
    window_start: datetime
    production_wh: int  # the window's production certificates, all sequences
    consumption_wh: int  # the window's consumption certificates, all sequences
    matched_wh: int  # claimed by earlier passes (sent and not failed)
    production: Sequence[Available] = ()
    consumption: Sequence[Available] = ()


@dataclass(frozen=True, slots=True)
class Entry:
    """One claimBatch entry: 0 Wh claims both slices whole (they are equal)."""

    production_slice_id: int
    consumption_slice_id: int
    quantity_wh: int
    claimed_wh: int  # what the entry claims (== quantity_wh unless that is 0)


@dataclass(frozen=True, slots=True)
class WindowPlan:
    window_start: datetime
    entries: tuple[Entry, ...]

    @property
    def claimed_wh(self) -> int:
        return sum(entry.claimed_wh for entry in self.entries)


def target_wh(production_wh: int, consumption_wh: int) -> int:
    return min(production_wh, consumption_wh)


def still_needed_wh(state: WindowState) -> int:
    """What the window still lacks; never negative (a hand claim may have done more)."""
    return max(0, target_wh(state.production_wh, state.consumption_wh) - state.matched_wh)


def deficit_wh(consumption_wh: int, matched_wh: int) -> int:
    """Consumption no production was claimed against."""
    return max(0, consumption_wh - matched_wh)


def surplus_wh(production_wh: int, matched_wh: int) -> int:
    """Production left Active in the wallet."""
    return max(0, production_wh - matched_wh)


def _ordered(slices: Sequence[Available]) -> list[Available]:
    return sorted(slices, key=lambda s: (s.certificate_id, s.slice_id))


def plan_window(state: WindowState, max_entries: int) -> WindowPlan:
    """The entries of one window for this pass (rule order in the module docstring)."""
    need = still_needed_wh(state)
    production = _ordered(state.production)
    consumption = _ordered(state.consumption)
    entries: list[Entry] = []
    i = j = 0
    # What is left of the current slice of each side, and the id the next entry names it by
    # (0 once an entry split it: the remainder).
    p_left = production[0].quantity_wh if production else 0
    c_left = consumption[0].quantity_wh if consumption else 0
    p_id = production[0].slice_id if production else 0
    c_id = consumption[0].slice_id if consumption else 0
    while need > 0 and i < len(production) and j < len(consumption):
        if len(entries) >= max_entries:
            break
        quantity = min(p_left, c_left, need)
        whole = quantity == p_left == c_left
        entries.append(Entry(p_id, c_id, 0 if whole else quantity, quantity))
        need -= quantity
        p_left -= quantity
        c_left -= quantity
        if p_left == 0:
            i += 1
            p_left = production[i].quantity_wh if i < len(production) else 0
            p_id = production[i].slice_id if i < len(production) else 0
        else:
            p_id = 0  # split: the remainder
        if c_left == 0:
            j += 1
            c_left = consumption[j].quantity_wh if j < len(consumption) else 0
            c_id = consumption[j].slice_id if j < len(consumption) else 0
        else:
            c_id = 0
    return WindowPlan(state.window_start, tuple(entries))


def plan(states: Sequence[WindowState], max_entries: int) -> list[WindowPlan]:
    """The windows' plans, oldest window first, at most `max_entries` entries in all (one
    claimBatch); windows with nothing to claim are left out."""
    plans: list[WindowPlan] = []
    left = max_entries
    for state in sorted(states, key=lambda s: s.window_start):
        if left <= 0:
            break
        window = plan_window(state, left)
        if window.entries:
            plans.append(window)
            left -= len(window.entries)
    return plans


def score(claimed_wh: int, consumed_wh: int) -> Fraction | None:
    """The matching score: claimed Wh / consumed Wh (None when nothing was consumed)."""
    if consumed_wh <= 0:
        return None
    return Fraction(claimed_wh, consumed_wh)
