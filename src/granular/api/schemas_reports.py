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

from pydantic import BaseModel, ConfigDict, Field

from granular.services.matching import MatchingState, MatchingStatus

SCORE = (
    "claimed Wh / consumed Wh as decimal text with 4 places, truncated (`0.8000`); "
    "null when nothing was consumed"
)


class _Public(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="forbid")

    @classmethod
    def csv_columns(cls) -> list[str]:
        """The wire names of the fields, in order: the header of the CSV form."""
        return [field.alias or name for name, field in cls.model_fields.items()]


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
