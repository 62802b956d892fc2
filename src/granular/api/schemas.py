"""Typed bodies of the registry API (`/interface/registry/v1`), camelCase on the wire with
the Energy Track & Trace names (`certificateID`, `sliceID`, `claimID`, `publicKey`).

Python attributes are snake_case; each field's alias is its wire name, so /docs shows every
field and a rename is a type error. `...Public` models are what the API returns. Quantities
are whole Wh (`quantityWh`); instants are ISO 8601 in UTC; hashes and addresses are 0x hex
(addresses in EIP-55 form).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from granular.domain.slices import Kind, SliceState
from granular.services.mirror import (
    CertificateDetail,
    CertificateView,
    ClaimView,
    SliceView,
    WalletView,
)

CertificateType = Literal["production", "consumption"]
SliceStateName = Literal["Active", "Removed", "Claimed", "Withdrawn", "Expired"]

KIND_NAMES: dict[Kind, CertificateType] = {
    Kind.PRODUCTION: "production",
    Kind.CONSUMPTION: "consumption",
}
STATE_NAMES: dict[SliceState, SliceStateName] = {
    SliceState.ACTIVE: "Active",
    SliceState.REMOVED: "Removed",
    SliceState.CLAIMED: "Claimed",
    SliceState.WITHDRAWN: "Withdrawn",
    SliceState.EXPIRED: "Expired",
}


class _Public(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)


class SlicePublic(_Public):
    slice_id: int = Field(alias="sliceID")
    certificate_id: int = Field(alias="certificateID")
    owner: str = Field(alias="owner", description="public key (address) of the holding wallet")
    certificate_type: CertificateType = Field(alias="certificateType")
    state: SliceStateName
    quantity_wh: int = Field(alias="quantityWh")
    parent_slice_id: int | None = Field(
        alias="parentSliceID", description="the slice this one was split from"
    )
    block_number: int = Field(alias="blockNumber", description="block of its last change")

    @classmethod
    def of(cls, view: SliceView) -> SlicePublic:
        return cls(
            slice_id=view.id,
            certificate_id=view.certificate_id,
            owner=view.owner,
            certificate_type=KIND_NAMES[view.kind],
            state=STATE_NAMES[view.state],
            quantity_wh=view.quantity_wh,
            parent_slice_id=view.parent_id,
            block_number=view.block_number,
        )


class ClaimPublic(_Public):
    claim_id: int = Field(alias="claimID", description="the claimed production slice's id")
    production_slice_id: int = Field(alias="productionSliceID")
    consumption_slice_id: int = Field(alias="consumptionSliceID")
    production_certificate_id: int = Field(alias="productionCertificateID")
    consumption_certificate_id: int = Field(alias="consumptionCertificateID")
    quantity_wh: int = Field(alias="quantityWh")
    claimant: str = Field(description="owner of the production slice when it was claimed")
    consumer: str = Field(description="owner of the consumption slice when it was claimed")
    tx_hash: str = Field(alias="txHash")
    block_number: int = Field(alias="blockNumber")

    @classmethod
    def of(cls, view: ClaimView) -> ClaimPublic:
        return cls(
            claim_id=view.id,
            production_slice_id=view.production_slice_id,
            consumption_slice_id=view.consumption_slice_id,
            production_certificate_id=view.production_certificate_id,
            consumption_certificate_id=view.consumption_certificate_id,
            quantity_wh=view.quantity_wh,
            claimant=view.claimant,
            consumer=view.consumer,
            tx_hash=view.tx_hash,
            block_number=view.block_number,
        )


class CertificatePublic(_Public):
    certificate_id: int = Field(alias="certificateID")
    certificate_type: CertificateType = Field(alias="certificateType")
    quantity_wh: int = Field(alias="quantityWh")
    data_hash: str = Field(alias="dataHash", description="keccak256 of the canonical header")
    issued_to: str = Field(alias="issuedTo", description="wallet the certificate was issued to")
    tx_hash: str = Field(
        alias="txHash", description="the issuing transaction (transaction certificate id)"
    )
    block_number: int = Field(alias="blockNumber")
    batch_id: str | None = Field(alias="batchID")
    asset_id: str | None = Field(alias="assetID", description="from the header, when known")
    fuel_code: str | None = Field(alias="fuelCode")
    tech_code: str | None = Field(alias="techCode")
    country_code: str | None = Field(alias="countryCode")
    period_start: datetime | None = Field(alias="periodStart")
    period_end: datetime | None = Field(alias="periodEnd")
    reservation_id: str | None = Field(alias="reservationID")

    @staticmethod
    def fields_of(view: CertificateView) -> dict[str, Any]:
        return {
            "certificate_id": view.id,
            "certificate_type": KIND_NAMES[view.kind],
            "quantity_wh": view.quantity_wh,
            "data_hash": view.data_hash,
            "issued_to": view.owner,
            "tx_hash": view.tx_hash,
            "block_number": view.block_number,
            "batch_id": view.batch_id,
            "asset_id": view.asset_id,
            "fuel_code": view.fuel_code,
            "tech_code": view.tech_code,
            "country_code": view.country,
            "period_start": view.period_start,
            "period_end": view.period_end,
            "reservation_id": view.reservation_id,
        }

    @classmethod
    def of(cls, view: CertificateView) -> CertificatePublic:
        return cls(**cls.fields_of(view))


class CertificateDetailPublic(CertificatePublic):
    header: dict[str, Any] | None = Field(
        description="the issuer's header; null for a certificate of another issuer"
    )
    header_canonical: str | None = Field(
        alias="headerCanonical",
        description="the header's canonical JSON: keccak256 of its UTF-8 bytes is dataHash",
    )
    slices: list[SlicePublic]
    claims: list[ClaimPublic]
    links: dict[str, str] = Field(
        description="provenance: the reservation and the device (its parameter revisions) "
        "the certificate was issued for, when its header names them; its slices and claims"
    )

    @classmethod
    def of_detail(cls, detail: CertificateDetail) -> CertificateDetailPublic:
        raw = detail.certificate.header_json
        return cls(
            **cls.fields_of(detail.certificate),
            header=json.loads(raw) if raw is not None else None,
            header_canonical=raw,
            slices=[SlicePublic.of(s) for s in detail.slices],
            claims=[ClaimPublic.of(c) for c in detail.claims],
            links=_provenance_links(detail.certificate),
        )


def _provenance_links(view: CertificateView) -> dict[str, str]:
    registry = "/interface/registry/v1"
    links = {
        "self": f"{registry}/certificates/{view.id}",
        "slices": f"{registry}/slices?certificateID={view.id}",
        "claims": f"{registry}/claims?certificateID={view.id}",
    }
    if view.reservation_id is not None:
        links["reservation"] = f"/reservations/{quote(view.reservation_id, safe='')}"
    device_id = _header_device_id(view.header_json)
    if device_id is not None:
        links["device"] = f"/devices/{device_id}/revisions"
    return links


def _header_device_id(header_json: str | None) -> int | None:
    """The issuer's own device id (`deviceId`, an integer) from the header, if any."""
    if header_json is None:
        return None
    try:
        header = json.loads(header_json)
    except ValueError:
        return None
    found = header.get("deviceId") if isinstance(header, dict) else None
    return found if isinstance(found, int) and not isinstance(found, bool) else None


class WalletPublic(_Public):
    public_key: str = Field(alias="publicKey")
    name: str | None
    status: Literal["active", "closed"]
    active_slices: int = Field(alias="activeSlices")
    operators: list[str] = Field(description="addresses the wallet approved to act for it")

    @classmethod
    def of(cls, view: WalletView) -> WalletPublic:
        return cls(
            public_key=view.address,
            name=view.name,
            status="closed" if view.closed else "active",
            active_slices=view.active_slices,
            operators=list(view.operators),
        )


class _PagePublic(_Public):
    next_cursor: str | None = Field(
        alias="nextCursor", description="pass as `cursor` for the next page; null on the last"
    )
    limit: int


class CertificatePagePublic(_PagePublic):
    certificates: list[CertificatePublic]


class SlicePagePublic(_PagePublic):
    slices: list[SlicePublic]


class ClaimPagePublic(_PagePublic):
    claims: list[ClaimPublic]


class WalletPagePublic(_PagePublic):
    wallets: list[WalletPublic]
