"""Typed answers of the reports (`/reports/claims`, `/reports/origin`) and of a reservation's
matching state (the `matching` field of `GET /reservations/{id}`). The same family as
`api/schemas.py` and `api/schemas_fleet.py`: `...Public` is what the API returns, camelCase
on the wire through each field's alias, extra fields forbidden (a key the model does not
declare is a 500 in the tests, never a field missing from /docs).

Instants are ISO 8601 strings in UTC (`2026-06-22T10:00:00+00:00`); energy is whole Wh; a
score is claimed Wh / consumed Wh as decimal text with 4 places, truncated. The CSV form of
a report is its rows (`series`, `rows`) under a header of the row model's wire names
(`csv_columns`), so the JSON and the CSV cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from granular.services.matching import MatchingState, MatchingStatus
from granular.services.reports import (
    ClaimedBucket,
    ClaimsReport,
    OriginReport,
    OriginRow,
    Period,
    Resolution,
)

SCORE = (
    "claimed Wh / consumed Wh as decimal text with 4 places, truncated (`0.8000`); "
    "null when nothing was consumed"
)
UNKNOWN = "`unknown` when the certificate's header does not say"


class _Public(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="forbid")

    @classmethod
    def csv_columns(cls) -> list[str]:
        """The wire names of the fields, in order: the header of the CSV form."""
        return [field.alias or name for name, field in cls.model_fields.items()]


# --- reports ------------------------------------------------------------------------------


class _ReportPublic(_Public):
    """What every report states first: whose energy, which period, at which resolution."""

    wallets: list[str] | None = Field(
        description="the consumption wallets covered (EIP-55); null: every wallet"
    )
    from_: str = Field(alias="from", description="start of the period (inclusive)")
    to: str = Field(description="end of the period (exclusive)")
    resolution: Resolution = Field(description="the size of a bucket")
    claimed_wh: int = Field(alias="claimedWh", description="claimed over the period")

    @staticmethod
    def _head(wallets: list[str] | None, period: Period) -> dict[str, Any]:
        return {
            "wallets": wallets,
            "from_": period.start.isoformat(),
            "to": period.end.isoformat(),
            "resolution": period.resolution,
        }


class ClaimedBucketPublic(_Public):
    """One bucket of the claims report's time series (a row of its CSV)."""

    start: str = Field(description="start of the bucket")
    claimed_wh: int = Field(
        alias="claimedWh", description="claimed of production whose period starts in the bucket"
    )

    @classmethod
    def of(cls, bucket: ClaimedBucket) -> ClaimedBucketPublic:
        return cls(start=bucket.start.isoformat(), claimed_wh=bucket.claimed_wh)


class ClaimsReportPublic(_ReportPublic):
    """`GET /reports/claims`: the claimed energy of the period with its totals by code,
    country and device, the consumed energy, the matching score and a time series. A claim
    counts in the period its production certificate's period starts in."""

    consumed_wh: int = Field(
        alias="consumedWh", description="of the consumption certificates issued to the wallets"
    )
    score: str | None = Field(description=f"the matching score of the period: {SCORE}")
    claims: int = Field(description="how many claims")
    by_fuel_code: dict[str, int] = Field(
        alias="byFuelCode", description=f"claimed Wh by the production's fuelCode; {UNKNOWN}"
    )
    by_tech_code: dict[str, int] = Field(
        alias="byTechCode", description=f"claimed Wh by techCode; {UNKNOWN}"
    )
    by_country: dict[str, int] = Field(
        alias="byCountry", description=f"claimed Wh by country code; {UNKNOWN}"
    )
    by_device: dict[str, int] = Field(
        alias="byDevice", description=f"claimed Wh by production device (assetID); {UNKNOWN}"
    )
    series: list[ClaimedBucketPublic] = Field(
        description="every bucket of the period, in order, empty ones included"
    )

    @classmethod
    def of(cls, report: ClaimsReport) -> ClaimsReportPublic:
        return cls(
            **cls._head(report.wallets, report.period),
            claimed_wh=report.claimed_wh,
            consumed_wh=report.consumed_wh,
            score=report.score,
            claims=report.claims,
            by_fuel_code=report.by_fuel_code,
            by_tech_code=report.by_tech_code,
            by_country=report.by_country,
            by_device=report.by_device,
            series=[ClaimedBucketPublic.of(b) for b in report.series],
        )


class OriginRowPublic(_Public):
    """Claimed energy of one (bucket, device, fuelCode, techCode, country): a row of the
    origin report and of its CSV."""

    start: str = Field(description="start of the bucket")
    device: str = Field(description=f"the production device (assetID); {UNKNOWN}")
    fuel_code: str = Field(alias="fuelCode", description=UNKNOWN)
    tech_code: str = Field(alias="techCode", description=UNKNOWN)
    country: str = Field(description=f"country code; {UNKNOWN}")
    claimed_wh: int = Field(alias="claimedWh")

    @classmethod
    def of(cls, row: OriginRow) -> OriginRowPublic:
        return cls(
            start=row.start.isoformat(),
            device=row.device,
            fuel_code=row.fuel_code,
            tech_code=row.tech_code,
            country=row.country,
            claimed_wh=row.claimed_wh,
        )


class OriginReportPublic(_ReportPublic):
    """`GET /reports/origin`: where the claimed energy came from."""

    rows: list[OriginRowPublic] = Field(
        description="buckets with claims only, ordered by start, device and codes"
    )

    @classmethod
    def of(cls, report: OriginReport) -> OriginReportPublic:
        return cls(
            **cls._head(report.wallets, report.period),
            claimed_wh=report.claimed_wh,
            rows=[OriginRowPublic.of(r) for r in report.rows],
        )


# --- the matching state of a reservation --------------------------------------------------


class MatchingPublic(_Public):
    """Matching claims of a reservation with consumption devices (DESIGN §4): the last
    pass's state and the Wh over the reservation's windows."""

    state: MatchingState = Field(
        description="`waiting_for_operator`: the wallet has not approved the issuer as its "
        "operator, nothing is claimed; `claiming`: a claimBatch is on its way; "
        "`waiting_for_certificates`: a window's certificates are not all confirmed yet; "
        "`up_to_date`: every ready window is matched as far as its certificates allow"
    )
    detail: str | None = Field(description="what to do about the state, when there is something")
    updated_at: str = Field(alias="updatedAt", description="when the state last changed")
    claimed_wh: int = Field(alias="claimedWh")
    consumed_wh: int = Field(alias="consumedWh")
    produced_wh: int = Field(alias="producedWh")
    deficit_wh: int = Field(
        alias="deficitWh", description="consumption no production was claimed against"
    )
    surplus_wh: int = Field(alias="surplusWh", description="production left unclaimed")
    score: str | None = Field(description=SCORE)

    @classmethod
    def of(cls, status: MatchingStatus) -> MatchingPublic:
        return cls(
            state=status.state,
            detail=status.detail,
            updated_at=status.updated_at.isoformat(),
            claimed_wh=status.claimed_wh,
            consumed_wh=status.consumed_wh,
            produced_wh=status.produced_wh,
            deficit_wh=status.deficit_wh,
            surplus_wh=status.surplus_wh,
            score=status.score,
        )
