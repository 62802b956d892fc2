"""/interface/registry/v1: the registry mirror, read-only (certificates, slices, claims,
wallets), as the Energy Track & Trace registry API names them. Any API key may read.

Lists are keyset-paged: `limit` (1..500, default 50) items ordered by id (`sort=id`, or
`sort=-id` for newest first), and `nextCursor` to pass as `cursor` for the next page; an
item inserted between two pages never shifts or repeats another. Filters combine with AND:
`owner` (a wallet's public key), `state`, `certificateType`, and, from the certificate's
header, `assetID`, `fuelCode`, `techCode`, `countryCode`, `reservationID` and the period
range `periodFrom` / `periodTo` (certificates whose [periodStart, periodEnd) lies within
it: periodStart >= periodFrom, periodEnd <= periodTo). A certificate minted without a
header the issuer kept matches no header filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import AwareDatetime

from granular.api.deps import Caller, Sessions
from granular.api.schemas import (
    STATE_NAMES,
    CertificateDetailPublic,
    CertificatePagePublic,
    CertificatePublic,
    CertificateType,
    ClaimPagePublic,
    ClaimPublic,
    SlicePagePublic,
    SlicePublic,
    SliceStateName,
    WalletPagePublic,
    WalletPublic,
)
from granular.domain.slices import Kind
from granular.errors import ValidationError
from granular.services import mirror as service
from granular.services.mirror import Filters, Page

router = APIRouter(prefix="/interface/registry/v1", tags=["registry"])

MAX_ID = 2**63 - 1
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=100, description="nextCursor of the last page")]
Sort = Annotated[Literal["id", "-id"], Query(description="id ascending, or -id descending")]
Owner = Annotated[str | None, Query(description="a wallet's public key (address)")]
_STATE_BY_NAME = {name: state for state, name in STATE_NAMES.items()}
_KIND_BY_NAME = {"production": Kind.PRODUCTION, "consumption": Kind.CONSUMPTION}


class CursorInvalid(ValidationError):
    code = "cursor_invalid"

    def __init__(self, value: str) -> None:
        super().__init__(
            f"cursor={value!r} breaks the rule: the nextCursor of a previous page",
            {"field": "cursor", "value": value, "rule": "a nextCursor value"},
        )


def _after_id(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or not 0 <= int(cursor) <= MAX_ID:
        raise CursorInvalid(cursor)
    return int(cursor)


@dataclass(frozen=True, slots=True)
class HeaderQuery:
    """The filters every list takes from the certificate's header."""

    asset_id: str | None
    fuel_code: str | None
    tech_code: str | None
    country_code: str | None
    period_from: AwareDatetime | None
    period_to: AwareDatetime | None
    reservation_id: str | None
    certificate_id: int | None


def header_query(
    certificate_id: Annotated[int | None, Query(alias="certificateID", ge=1, le=MAX_ID)] = None,
    asset_id: Annotated[str | None, Query(alias="assetID", max_length=200)] = None,
    fuel_code: Annotated[str | None, Query(alias="fuelCode", max_length=32)] = None,
    tech_code: Annotated[str | None, Query(alias="techCode", max_length=32)] = None,
    country_code: Annotated[str | None, Query(alias="countryCode", max_length=8)] = None,
    period_from: Annotated[AwareDatetime | None, Query(alias="periodFrom")] = None,
    period_to: Annotated[AwareDatetime | None, Query(alias="periodTo")] = None,
    reservation_id: Annotated[str | None, Query(alias="reservationID", max_length=64)] = None,
) -> HeaderQuery:
    return HeaderQuery(
        asset_id=asset_id,
        fuel_code=fuel_code,
        tech_code=tech_code,
        country_code=country_code,
        period_from=period_from,
        period_to=period_to,
        reservation_id=reservation_id,
        certificate_id=certificate_id,
    )


def page_query(limit: Limit = 50, cursor: Cursor = None, sort: Sort = "id") -> Page:
    return Page(after_id=_after_id(cursor), limit=limit, descending=sort == "-id")


Header = Annotated[HeaderQuery, Depends(header_query)]
Paging = Annotated[Page, Depends(page_query)]


def _filters(
    header: HeaderQuery,
    *,
    owner: str | None = None,
    state: SliceStateName | None = None,
    certificate_type: CertificateType | None = None,
) -> Filters:
    return Filters(
        owner=service.checksum_public_key(owner, "owner") if owner is not None else None,
        state=_STATE_BY_NAME[state] if state is not None else None,
        kind=_KIND_BY_NAME[certificate_type] if certificate_type is not None else None,
        asset_id=header.asset_id,
        fuel_code=header.fuel_code,
        tech_code=header.tech_code,
        country=header.country_code,
        period_from=header.period_from,
        period_to=header.period_to,
        reservation_id=header.reservation_id,
        certificate_id=header.certificate_id,
    )


def _next(value: int | str | None) -> str | None:
    return None if value is None else str(value)


@router.get("/certificates", response_model=CertificatePagePublic, response_model_by_alias=True)
def list_certificates(
    sessions: Sessions,
    _caller: Caller,
    header: Header,
    page: Paging,
    owner: Owner = None,
    state: Annotated[
        SliceStateName | None, Query(description="has at least one slice in this state")
    ] = None,
    certificate_type: Annotated[CertificateType | None, Query(alias="certificateType")] = None,
) -> Any:
    """Certificates; `owner` is the wallet each was issued to."""
    listing = service.certificates(
        sessions=sessions,
        filters=_filters(header, owner=owner, state=state, certificate_type=certificate_type),
        page=page,
    )
    return CertificatePagePublic(
        certificates=[CertificatePublic.of(c) for c in listing.items],
        next_cursor=_next(listing.next_after),
        limit=page.limit,
    )


@router.get(
    "/certificates/{certificateID}",
    response_model=CertificateDetailPublic,
    response_model_by_alias=True,
)
def read_certificate(
    sessions: Sessions,
    _caller: Caller,
    certificate_id: Annotated[int, Path(alias="certificateID", ge=1, le=MAX_ID)],
) -> Any:
    """A certificate with its header, every slice and every claim it takes part in."""
    detail = service.certificate(sessions=sessions, certificate_id=certificate_id)
    return CertificateDetailPublic.of_detail(detail)


@router.get("/slices", response_model=SlicePagePublic, response_model_by_alias=True)
def list_slices(
    sessions: Sessions,
    _caller: Caller,
    header: Header,
    page: Paging,
    owner: Owner = None,
    state: SliceStateName | None = None,
    certificate_type: Annotated[CertificateType | None, Query(alias="certificateType")] = None,
) -> Any:
    """Slices; `owner` is the wallet holding each now."""
    listing = service.slices(
        sessions=sessions,
        filters=_filters(header, owner=owner, state=state, certificate_type=certificate_type),
        page=page,
    )
    return SlicePagePublic(
        slices=[SlicePublic.of(s) for s in listing.items],
        next_cursor=_next(listing.next_after),
        limit=page.limit,
    )


@router.get("/slices/{sliceID}", response_model=SlicePublic, response_model_by_alias=True)
def read_slice(
    sessions: Sessions,
    _caller: Caller,
    slice_id: Annotated[int, Path(alias="sliceID", ge=1, le=MAX_ID)],
) -> Any:
    return SlicePublic.of(service.slice_of(sessions=sessions, slice_id=slice_id))


@router.get("/claims", response_model=ClaimPagePublic, response_model_by_alias=True)
def list_claims(
    sessions: Sessions,
    _caller: Caller,
    header: Header,
    page: Paging,
    owner: Annotated[str | None, Query(description="the claimant or the consumer")] = None,
) -> Any:
    """Claims; header filters apply to the production certificate."""
    listing = service.claims(sessions=sessions, filters=_filters(header, owner=owner), page=page)
    return ClaimPagePublic(
        claims=[ClaimPublic.of(c) for c in listing.items],
        next_cursor=_next(listing.next_after),
        limit=page.limit,
    )


@router.get("/claims/{claimID}", response_model=ClaimPublic, response_model_by_alias=True)
def read_claim(
    sessions: Sessions,
    _caller: Caller,
    claim_id: Annotated[int, Path(alias="claimID", ge=1, le=MAX_ID)],
) -> Any:
    return ClaimPublic.of(service.claim(sessions=sessions, claim_id=claim_id))


@router.get("/wallets", response_model=WalletPagePublic, response_model_by_alias=True)
def list_wallets(
    sessions: Sessions,
    _caller: Caller,
    status: Literal["active", "closed"] | None = None,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(max_length=42)] = None,
    sort: Annotated[
        Literal["publicKey", "-publicKey"], Query(description="by address")
    ] = "publicKey",
) -> Any:
    """Every wallet the chain has mentioned (or the API named), by address."""
    after = service.checksum_public_key(cursor, "cursor") if cursor is not None else None
    listing = service.wallets(
        sessions=sessions,
        closed=None if status is None else status == "closed",
        after=after,
        limit=limit,
        descending=sort == "-publicKey",
    )
    return WalletPagePublic(
        wallets=[WalletPublic.of(w) for w in listing.items],
        next_cursor=_next(listing.next_after),
        limit=limit,
    )


@router.get("/wallets/{publicKey}", response_model=WalletPublic, response_model_by_alias=True)
def read_wallet(
    sessions: Sessions,
    _caller: Caller,
    public_key: Annotated[str, Path(alias="publicKey", max_length=42)],
) -> Any:
    address = service.checksum_public_key(public_key)
    return WalletPublic.of(service.wallet(sessions=sessions, address=address))
