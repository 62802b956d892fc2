"""Advanced claims (issue 8 §4, `POST /claims/advanced`): claim a consumption slice's
quantity from its wallet's own production slices, the best matches first.

1. The consumption slice is read on chain: Active, of kind consumption; its wallet is the
   one whose production is used, and the signer must have permission on it (its owner or an
   operator it approved), as for any claim.
2. Candidates are that wallet's Active production slices in the mirror, with their header
   fields; `domain/advanced_claims.ranked` orders them (same period, overlap, fuel, tech,
   country, older first).
3. In that order each candidate is read on chain until the quantity is covered, so a slice
   the mirror has not yet seen moved is skipped, never signed.
4. The plan is one `claimBatch`: the first entry names the consumption slice, each later
   entry names it as 0, the remainder the previous entry's split left, so one signature
   covers the whole plan although the remainders' ids only exist once it runs.

typed-data serves the plan with what to sign; the POST computes the plan again and refuses
(409 `advanced_claim_plan_changed`, with the new plan) when it is no longer the one signed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db import mirror as mirror_db
from granular.domain import advanced_claims as ranking
from granular.domain.advanced_claims import Candidate, NotEnoughProduction, PlannedClaim, Wanted
from granular.domain.codes import DEVICE_TYPE_CODES, FUEL_CODES
from granular.domain.commands import MAX_BATCH_ENTRIES, Claim, ClaimBatch
from granular.domain.devices import COUNTRY_CODE
from granular.domain.slices import Kind, Slice, SliceState
from granular.errors import Conflict, FieldRuleError, ValidationError
from granular.services import commands
from granular.services.commands import Accepted, RegistryCommands, Signed

# Mirror rows read per plan: the wallet's production slices, oldest first.
MAX_CANDIDATES = 20_000


class NotClaimable(FieldRuleError, ValidationError):
    code = "consumption_slice_not_claimable"


class NotIndexed(Conflict):
    code = "consumption_certificate_not_indexed"

    def __init__(self, slice_id: int, certificate_id: int) -> None:
        super().__init__(
            f"target={slice_id}: its certificate {certificate_id} has no period in the mirror "
            "yet (not indexed, or minted without a header); retry once the indexer has seen "
            "it, or claim with POST /claims/slices",
            {"field": "target", "value": slice_id, "certificateId": certificate_id},
        )


class TooManySlices(FieldRuleError, ValidationError):
    code = "advanced_claim_too_many_slices"


class PlanChanged(Conflict):
    code = "advanced_claim_plan_changed"

    def __init__(self, signed: list[dict[str, int]], current: list[dict[str, int]]) -> None:
        super().__init__(
            "claims: the plan sent is not the best one for this target, quantity and these "
            "criteria now (slices moved or arrived since typed-data, or the criteria differ "
            "from the ones typed-data was asked with); fetch typed-data again with the same "
            "criteria and sign the plan it serves",
            {"field": "claims", "value": signed, "current": current},
        )


class UnknownCode(FieldRuleError, ValidationError):
    code = "unknown_code"


@dataclass(frozen=True, slots=True)
class Preferences:
    fuel_code: str | None = None
    tech_code: str | None = None
    country: str | None = None
    require_overlap: bool = False


def preferences(
    fuel_code: str | None, tech_code: str | None, country: str | None, require_overlap: bool
) -> Preferences:
    """The ranking preferences, each a known code (GET /codes) or a country code, so a typo
    is refused instead of silently matching nothing."""
    if fuel_code is not None and fuel_code not in FUEL_CODES:
        raise UnknownCode("fuelCode", fuel_code, "an energy source code of GET /codes, e.g. ES100")
    if tech_code is not None and tech_code not in DEVICE_TYPE_CODES:
        raise UnknownCode("techCode", tech_code, "a technology code of GET /codes, e.g. TC110")
    if country is not None and not COUNTRY_CODE.match(country):
        raise UnknownCode("countryCode", country, "an ISO 3166-1 code in capitals, e.g. KE")
    return Preferences(fuel_code, tech_code, country, require_overlap)


@dataclass(frozen=True, slots=True)
class PlannedSource:
    """One production slice of the plan, with the header fields it was ranked by."""

    claim: PlannedClaim
    candidate: Candidate


@dataclass(frozen=True, slots=True)
class AdvancedPlan:
    target: int
    wallet: str
    quantity_wh: int
    period_start: datetime
    period_end: datetime
    sources: tuple[PlannedSource, ...]
    command: ClaimBatch

    def pairs(self) -> list[dict[str, int]]:
        """The plan as the client sends it back: source and quantity per entry."""
        return [
            {"source": s.claim.production_slice_id, "quantityWh": s.claim.quantity_wh}
            for s in self.sources
        ]


def _consumption(ctx: RegistryCommands, target: int) -> Slice:
    found = ctx.view.slice(target)
    if found is None:
        raise NotClaimable("target", target, "an existing consumption slice")
    if found.kind != Kind.CONSUMPTION:
        raise NotClaimable("target", target, "a consumption slice (this one is production)")
    if found.state != SliceState.ACTIVE:
        raise NotClaimable(
            "target", target, f"an Active slice (this one is {found.state.name.title()})"
        )
    return found


def _candidate(row: mirror_db.ClaimCandidate) -> Candidate:
    return Candidate(
        slice_id=row.slice_id,
        quantity_wh=row.quantity_wh,
        period_start=row.period_start,
        period_end=row.period_end,
        fuel_code=row.fuel_code,
        tech_code=row.tech_code,
        country=row.country,
    )


def plan(
    ctx: RegistryCommands,
    sessions: sessionmaker[Session],
    *,
    target: int,
    quantity_wh: int | None,
    preferences: Preferences,
) -> AdvancedPlan:
    """The claimBatch that claims `quantity_wh` (default: all) of consumption slice `target`
    from its wallet's production slices, best first (see the module doc)."""
    consumption = _consumption(ctx, target)
    wanted_wh = consumption.quantity_wh if quantity_wh is None else quantity_wh
    if not 1 <= wanted_wh <= consumption.quantity_wh:
        raise commands.InvalidField(
            "quantityWh", wanted_wh, f"1 to the slice's {consumption.quantity_wh} Wh"
        )
    with sessions() as session:
        period = mirror_db.certificate_period(
            session=session, certificate_id=consumption.certificate_id
        )
        if period is None:
            raise NotIndexed(target, consumption.certificate_id)
        rows = mirror_db.claim_candidates(
            session=session,
            owner=consumption.owner,
            overlapping=period if preferences.require_overlap else None,
            limit=MAX_CANDIDATES,
        )
    wanted = Wanted(
        quantity_wh=wanted_wh,
        period_start=period[0],
        period_end=period[1],
        fuel_code=preferences.fuel_code,
        tech_code=preferences.tech_code,
        country=preferences.country,
        require_overlap=preferences.require_overlap,
    )
    verified = _verified(ctx, consumption.owner, wanted, [_candidate(r) for r in rows])
    try:
        claims = ranking.plan(wanted, verified)
    except NotEnoughProduction as short:
        if preferences.require_overlap:
            short.details["requireOverlap"] = True
            short.args = (
                f"{short}, counting only slices whose period overlaps the target's "
                f"{period[0].isoformat()} to {period[1].isoformat()} (requireOverlap)",
            )
        raise
    if len(claims) > MAX_BATCH_ENTRIES:
        covered = sum(c.quantity_wh for c in claims[:MAX_BATCH_ENTRIES])
        raise TooManySlices(
            "quantityWh",
            wanted_wh,
            f"at most {MAX_BATCH_ENTRIES} production slices per claim; the best "
            f"{MAX_BATCH_ENTRIES} cover {covered} Wh: claim that much first",
        )
    entries = tuple(
        Claim(c.production_slice_id, target if i == 0 else 0, c.quantity_wh)
        for i, c in enumerate(claims)
    )
    verified_by_id = {c.slice_id: c for c in verified}
    return AdvancedPlan(
        target=target,
        wallet=consumption.owner,
        quantity_wh=wanted_wh,
        period_start=period[0],
        period_end=period[1],
        sources=tuple(PlannedSource(c, verified_by_id[c.production_slice_id]) for c in claims),
        command=ClaimBatch(entries),
    )


def _verified(
    ctx: RegistryCommands, wallet: str, wanted: Wanted, candidates: list[Candidate]
) -> list[Candidate]:
    """The best candidates, each checked on chain (Active production of the wallet, with its
    on-chain quantity), until they cover the quantity (or every candidate was read)."""
    verified: list[Candidate] = []
    covered_wh = 0
    for candidate in ranking.ranked(wanted, candidates):
        if covered_wh >= wanted.quantity_wh:
            break
        found = ctx.view.slice(candidate.slice_id)
        if (
            found is None
            or found.state != SliceState.ACTIVE
            or found.kind != Kind.PRODUCTION
            or found.owner != wallet
        ):
            continue
        verified.append(replace(candidate, quantity_wh=found.quantity_wh))
        covered_wh += found.quantity_wh
    return verified


def typed_data(
    ctx: RegistryCommands,
    sessions: sessionmaker[Session],
    *,
    signer: str,
    advanced: AdvancedPlan,
    nonce: int | None,
    deadline_s: int | None,
    gas: int | None,
) -> dict[str, Any]:
    (typed,) = commands.typed_data(
        ctx,
        sessions,
        signer=signer,
        commands=[advanced.command],
        nonce=nonce,
        deadline_s=deadline_s,
        gas=gas,
    )
    return typed


def relay(
    ctx: RegistryCommands,
    sessions: sessionmaker[Session],
    *,
    signer: str,
    target: int,
    quantity_wh: int | None,
    preferences: Preferences,
    signed_plan: list[dict[str, int]],
    signed: Signed,
    now: datetime,
) -> Accepted:
    """Plan again; relay the claimBatch when it is the plan that was signed."""
    advanced = plan(ctx, sessions, target=target, quantity_wh=quantity_wh, preferences=preferences)
    if advanced.pairs() != signed_plan:
        raise PlanChanged(signed_plan, advanced.pairs())
    return commands.relay(
        ctx,
        sessions,
        signer=signer,
        commands=[advanced.command],
        signatures=[signed],
        now=now,
        kind="advanced_claim",
    )
