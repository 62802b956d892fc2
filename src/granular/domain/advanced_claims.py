"""Which production slices an advanced claim takes (issue 8 §4, `POST /claims/advanced`).

A wallet claims a consumption certificate's quantity from its own Active production slices.
Candidates are ranked, best first, by:

1. period: the same period as the consumption, then an overlapping one (larger overlap
   first), then any other (only when `require_overlap` is False);
2. the fuel code, then the technology code, then the country: a candidate matching a stated
   preference comes before one that does not (no preference: no effect);
3. the older slice (lower slice id) first, so a plan is deterministic.

Slices are taken whole in that order; the last one is taken in part (claimPart) so the plan
sums exactly to the quantity. A candidate whose certificate has no period in its header
(minted by another issuer) overlaps nothing. Pure: candidates and headers come from the
mirror; the service checks the chosen slices on chain before it signs anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from granular.errors import ValidationError


@dataclass(frozen=True, slots=True)
class Candidate:
    """An Active production slice of the wallet, with its certificate's header fields."""

    slice_id: int
    quantity_wh: int
    period_start: datetime | None
    period_end: datetime | None  # exclusive
    fuel_code: str | None = None
    tech_code: str | None = None
    country: str | None = None


@dataclass(frozen=True, slots=True)
class Wanted:
    quantity_wh: int
    period_start: datetime
    period_end: datetime
    fuel_code: str | None = None
    tech_code: str | None = None
    country: str | None = None
    require_overlap: bool = False


@dataclass(frozen=True, slots=True)
class PlannedClaim:
    production_slice_id: int
    quantity_wh: int
    whole: bool  # the whole slice (claim) or a part of it (claimPart)


class NotEnoughProduction(ValidationError):
    code = "not_enough_production"

    def __init__(self, wanted_wh: int, available_wh: int) -> None:
        super().__init__(
            f"quantityWh={wanted_wh}: the wallet's matching production slices hold "
            f"{available_wh} Wh",
            {"field": "quantityWh", "value": wanted_wh, "availableWh": available_wh},
        )


def _overlap_s(candidate: Candidate, wanted: Wanted) -> int:
    if candidate.period_start is None or candidate.period_end is None:
        return 0
    start = max(candidate.period_start, wanted.period_start)
    end = min(candidate.period_end, wanted.period_end)
    return max(0, int((end - start).total_seconds()))


def _mismatch(preferred: str | None, actual: str | None) -> int:
    return 0 if preferred is None or preferred == actual else 1


def rank(candidate: Candidate, wanted: Wanted) -> tuple[int, int, int, int, int, int]:
    """Sort key of a candidate: lower is better (see the module doc)."""
    same = (candidate.period_start, candidate.period_end) == (
        wanted.period_start,
        wanted.period_end,
    )
    overlap_s = _overlap_s(candidate, wanted)
    period = 0 if same else 1 if overlap_s > 0 else 2
    return (
        period,
        -overlap_s,
        _mismatch(wanted.fuel_code, candidate.fuel_code),
        _mismatch(wanted.tech_code, candidate.tech_code),
        _mismatch(wanted.country, candidate.country),
        candidate.slice_id,
    )


def ranked(wanted: Wanted, candidates: Sequence[Candidate]) -> list[Candidate]:
    """The eligible candidates (some energy; overlapping when required), best first."""
    eligible = [
        c
        for c in candidates
        if c.quantity_wh > 0 and (not wanted.require_overlap or _overlap_s(c, wanted) > 0)
    ]
    return sorted(eligible, key=lambda c: rank(c, wanted))


def plan(wanted: Wanted, candidates: Sequence[Candidate]) -> list[PlannedClaim]:
    """The claims that take exactly `wanted.quantity_wh`, best candidates first; raises
    NotEnoughProduction (with what is available) when the eligible slices hold less."""
    eligible = ranked(wanted, candidates)
    available_wh = sum(c.quantity_wh for c in eligible)
    if wanted.quantity_wh <= 0 or available_wh < wanted.quantity_wh:
        raise NotEnoughProduction(wanted.quantity_wh, available_wh)
    claims: list[PlannedClaim] = []
    left_wh = wanted.quantity_wh
    for candidate in eligible:
        if left_wh == 0:
            break
        taken_wh = min(left_wh, candidate.quantity_wh)
        claims.append(PlannedClaim(candidate.slice_id, taken_wh, taken_wh == candidate.quantity_wh))
        left_wh -= taken_wh
    return claims
