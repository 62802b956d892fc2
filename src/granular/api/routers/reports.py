"""Reports: `GET /reports/claims`, `GET /reports/origin` (JSON, or CSV with `Accept:
text/csv` or `format=csv`) and `GET /reports/matching.svg`. A buyer reads its own wallets
(those of its reservations), an issuer or a viewer any wallet (services.reports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel

from granular.api.deps import Caller, Now, Sessions
from granular.api.schemas_reports import (
    ClaimedBucketPublic,
    ClaimsReportPublic,
    OriginReportPublic,
    OriginRowPublic,
)
from granular.services import reports as service
from granular.services.reports import Resolution

router = APIRouter(prefix="/reports", tags=["reports"])

Wallet = Annotated[
    str | None,
    Query(description="a consumption wallet (default: every wallet you may read)", max_length=42),
]
From = Annotated[AwareDatetime | None, Query(alias="from", description="default: to - 7 days")]
To = Annotated[AwareDatetime | None, Query(alias="to", description="default: this hour's end")]
Format = Annotated[Literal["json", "csv"] | None, Query(description="or the Accept header")]


def _csv_wanted(format_: str | None, accept: str | None) -> bool:
    if format_ is not None:
        return format_ == "csv"
    return accept is not None and "text/csv" in accept


def _csv(columns: list[str], rows: Sequence[BaseModel], name: str) -> Response:
    """The rows of a report as CSV under `columns` (the row model's wire names)."""
    return Response(
        service.to_csv(columns, (r.model_dump(by_alias=True) for r in rows)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


def _with_csv(rows: str, columns: list[str]) -> dict[int | str, dict[str, Any]]:
    """The 200 answer's CSV form in /docs, beside the JSON one FastAPI takes from the model."""
    return {
        200: {
            "description": f"JSON; or, with `Accept: text/csv` or `format=csv`, the {rows} as "
            f"CSV with the header `{','.join(columns)}`",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    }


@router.get(
    "/claims",
    summary="Claimed energy by fuelCode, techCode, country, device, period",
    response_model=ClaimsReportPublic,
    responses=_with_csv("`series`", ClaimedBucketPublic.csv_columns()),
)
def claims(
    caller: Caller,
    sessions: Sessions,
    now: Now,
    wallet: Wallet = None,
    from_: From = None,
    to: To = None,
    resolution: Resolution = Resolution.HOURLY,
    format_: Annotated[Format, Query(alias="format")] = None,
    accept: Annotated[str | None, Header()] = None,
) -> ClaimsReportPublic | Response:
    """JSON: totals and a time series; CSV: the time series."""
    wallets = service.visible_wallets(sessions=sessions, caller=caller, wallet=wallet)
    period = service.period_of(from_, to, resolution, now)
    report = ClaimsReportPublic.of(
        service.claims_report(sessions=sessions, wallets=wallets, period=period)
    )
    if _csv_wanted(format_, accept):
        return _csv(ClaimedBucketPublic.csv_columns(), report.series, "claims")
    return report


@router.get(
    "/origin",
    summary="Where the claimed energy came from, per device and period",
    response_model=OriginReportPublic,
    responses=_with_csv("`rows`", OriginRowPublic.csv_columns()),
)
def origin(
    caller: Caller,
    sessions: Sessions,
    now: Now,
    wallet: Wallet = None,
    from_: From = None,
    to: To = None,
    resolution: Resolution = Resolution.DAILY,
    format_: Annotated[Format, Query(alias="format")] = None,
    accept: Annotated[str | None, Header()] = None,
) -> OriginReportPublic | Response:
    """JSON: the total and one row per bucket, device and codes; CSV: the rows."""
    wallets = service.visible_wallets(sessions=sessions, caller=caller, wallet=wallet)
    period = service.period_of(from_, to, resolution, now)
    report = OriginReportPublic.of(
        service.origin_report(sessions=sessions, wallets=wallets, period=period)
    )
    if _csv_wanted(format_, accept):
        return _csv(OriginRowPublic.csv_columns(), report.rows, "origin")
    return report


@router.get(
    "/matching.svg",
    summary="Production, consumption and claimed energy per hour, with the score",
    response_class=Response,
    responses={
        200: {
            "description": "an SVG image: claimed Wh as bars, production and consumption as "
            "lines, the period's matching score in the title",
            "content": {"image/svg+xml": {"schema": {"type": "string"}}},
        }
    },
)
def matching_svg(
    caller: Caller,
    sessions: Sessions,
    now: Now,
    wallet: Wallet = None,
    from_: From = None,
    to: To = None,
) -> Response:
    wallets = service.visible_wallets(sessions=sessions, caller=caller, wallet=wallet)
    period = service.period_of(from_, to, Resolution.HOURLY, now)
    hours = service.hourly(sessions=sessions, wallets=wallets, period=period)
    title = "Hourly matching" + (f" of {wallets[0]}" if wallets and len(wallets) == 1 else "")
    return Response(service.matching_svg(hours, title=title), media_type="image/svg+xml")
