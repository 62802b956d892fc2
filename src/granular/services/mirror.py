"""Reading the registry mirror (DESIGN.md §7): what the read API and command checks use.

Each function opens one read-only session and returns plain frozen values. Lists are
keyset-paged on the id (the address for wallets): a page is `limit` items and the key to
continue after, so inserts between two pages never shift or repeat an item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from eth_utils.address import is_address, to_checksum_address
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db import mirror as db
from granular.adapters.db.mirror import (
    CertificateView,
    ClaimView,
    Filters,
    Page,
    SliceView,
    WalletView,
)
from granular.errors import NotFound, ValidationError

__all__ = [
    "CertificateDetail",
    "CertificateView",
    "ClaimView",
    "Filters",
    "Listing",
    "Page",
    "SliceView",
    "WalletView",
    "certificate",
    "certificates",
    "checksum_public_key",
    "claim",
    "claims",
    "is_operator",
    "slice_of",
    "slices",
    "wallet",
    "wallets",
]

T = TypeVar("T")


class PublicKeyInvalid(ValidationError):
    code = "public_key_invalid"

    def __init__(self, field: str, value: str) -> None:
        super().__init__(
            f"{field}={value!r} breaks the rule: a 20-byte hex EVM address (0x + 40 hex digits)",
            {"field": field, "value": value, "rule": "an EVM address"},
        )


def checksum_public_key(value: str, field: str = "publicKey") -> str:
    """The EIP-55 form of an address given in any case; anything else is refused."""
    if not is_address(value):
        raise PublicKeyInvalid(field, value)
    return to_checksum_address(value)


@dataclass(frozen=True, slots=True)
class Listing(Generic[T]):
    items: list[T]
    next_after: int | str | None  # pass as `after` for the next page; None on the last one


@dataclass(frozen=True, slots=True)
class CertificateDetail:
    certificate: CertificateView
    slices: list[SliceView]
    claims: list[ClaimView]


def _listing(rows: list[T], limit: int, key: str) -> Listing[T]:
    more = len(rows) > limit
    items = rows[:limit]
    return Listing(items, getattr(items[-1], key) if more and items else None)


def certificates(
    *, sessions: sessionmaker[Session], filters: Filters, page: Page
) -> Listing[CertificateView]:
    with sessions() as session:
        rows = db.list_certificates(session=session, filters=filters, page=page)
    return _listing(rows, page.limit, "id")


def certificate(*, sessions: sessionmaker[Session], certificate_id: int) -> CertificateDetail:
    with sessions() as session:
        found = db.get_certificate(session=session, certificate_id=certificate_id)
    if found is None:
        raise NotFound(
            f"certificate {certificate_id} is not in the mirror",
            {"field": "certificateID", "value": certificate_id},
        )
    return CertificateDetail(*found)


def slices(*, sessions: sessionmaker[Session], filters: Filters, page: Page) -> Listing[SliceView]:
    with sessions() as session:
        rows = db.list_slices(session=session, filters=filters, page=page)
    return _listing(rows, page.limit, "id")


def slice_of(*, sessions: sessionmaker[Session], slice_id: int) -> SliceView:
    with sessions() as session:
        found = db.get_slice(session=session, slice_id=slice_id)
    if found is None:
        raise NotFound(
            f"slice {slice_id} is not in the mirror", {"field": "sliceID", "value": slice_id}
        )
    return found


def claims(*, sessions: sessionmaker[Session], filters: Filters, page: Page) -> Listing[ClaimView]:
    with sessions() as session:
        rows = db.list_claims(session=session, filters=filters, page=page)
    return _listing(rows, page.limit, "id")


def claim(*, sessions: sessionmaker[Session], claim_id: int) -> ClaimView:
    with sessions() as session:
        found = db.get_claim(session=session, claim_id=claim_id)
    if found is None:
        raise NotFound(
            f"claim {claim_id} is not in the mirror", {"field": "claimID", "value": claim_id}
        )
    return found


def wallets(
    *,
    sessions: sessionmaker[Session],
    closed: bool | None,
    after: str | None,
    limit: int,
    descending: bool,
) -> Listing[WalletView]:
    with sessions() as session:
        rows = db.list_wallets(
            session=session, closed=closed, after=after, limit=limit, descending=descending
        )
    return _listing(rows, limit, "address")


def wallet(*, sessions: sessionmaker[Session], address: str) -> WalletView:
    with sessions() as session:
        found = db.get_wallet(session=session, address=address)
    if found is None:
        raise NotFound(
            f"wallet {address} is not in the mirror", {"field": "publicKey", "value": address}
        )
    return found


def is_operator(*, sessions: sessionmaker[Session], wallet: str, operator: str) -> bool:
    with sessions() as session:
        return db.is_operator(session=session, wallet=wallet, operator=operator)
