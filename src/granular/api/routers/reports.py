"""Reports: `GET /reports/claims`, `GET /reports/origin` (JSON, or CSV with `Accept:
text/csv` or `format=csv`) and `GET /reports/matching.svg`. A buyer reads its own wallets
(those of its reservations), an issuer or a viewer any wallet (services.reports)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response
from pydantic import AwareDatetime

from granular.api.deps import Caller, Now, Sessions
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


def _respond(body: dict[str, Any], rows_key: str, csv: bool, name: str) -> Any:
    if not csv:
        return body
    return Response(
        service.to_csv(body[rows_key]),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


@router.get("/claims", summary="Claimed energy by fuelCode, techCode, country, device, period")
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
) -> Any:
    """JSON: totals and a time series; CSV: the time series."""
    wallets = service.visible_wallets(sessions=sessions, caller=caller, wallet=wallet)
    period = service.period_of(from_, to, resolution, now)
    body = service.claims_report(sessions=sessions, wallets=wallets, period=period)
    return _respond(body, "series", _csv_wanted(format_, accept), "claims")


@router.get("/origin", summary="Where the claimed energy came from, per device and period")
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
) -> Any:
    wallets = service.visible_wallets(sessions=sessions, caller=caller, wallet=wallet)
    period = service.period_of(from_, to, resolution, now)
    body = service.origin_report(sessions=sessions, wallets=wallets, period=period)
    return _respond(body, "rows", _csv_wanted(format_, accept), "origin")


@router.get(
    "/matching.svg",
    summary="Production, consumption and claimed energy per hour, with the score",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}},
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
