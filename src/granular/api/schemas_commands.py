"""Bodies of the registry commands under /interface/registry/v1 (camelCase on the wire).

A relayed command's body is the command's own fields plus the ForwardRequest fields the
wallet owner signed (`from`, `nonce`, `deadline`, `gas`) and the `signature`; the server
rebuilds the request from them (the registry as target, no value), so a signature over
anything else recovers another address and is refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from granular.domain.commands import MAX_BATCH_ENTRIES

Uint = Annotated[int, Field(strict=True, ge=0, le=2**256 - 1)]
SliceId = Annotated[int, Field(strict=True, ge=1, le=2**256 - 1)]
QuantityWh = Annotated[int, Field(strict=True, ge=1, le=2**64 - 1)]
Deadline = Annotated[int, Field(strict=True, ge=0, le=2**48 - 1)]
Gas = Annotated[int, Field(strict=True, ge=0, le=2**64 - 1)]
Address = Annotated[str, Field(min_length=42, max_length=42, pattern=r"^0x[0-9a-fA-F]{40}$")]
Signature = Annotated[
    str,
    Field(
        min_length=130,
        max_length=132,
        pattern=r"^(0x)?[0-9a-fA-F]{130}$",
        description="65 bytes in hex, 0x-prefixed or not (eth_account's .hex() has no 0x)",
    ),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SignedFields(_In):
    """The ForwardRequest fields the owner signed, and the signature (65 bytes, 0x-hex)."""

    from_: Address = Field(alias="from")
    nonce: Uint
    deadline: Deadline
    gas: Gas | None = Field(
        default=None, description="as signed; leave out when you signed the gas typed-data proposed"
    )
    signature: Signature

    def signature_bytes(self) -> bytes:
        return bytes.fromhex(self.signature.removeprefix("0x"))


class TransferCreate(SignedFields):
    to: Address
    quantity_wh: QuantityWh | None = Field(default=None, alias="quantityWh")


class TransferEntry(_In):
    slice_id: SliceId = Field(alias="sliceId")
    to: Address
    quantity_wh: QuantityWh | None = Field(default=None, alias="quantityWh")


class TransferListCreate(SignedFields):
    """Several transfers of one signer, signed once and sent as one transferBatch (all or
    nothing, in order)."""

    transfers: list[TransferEntry] = Field(min_length=1, max_length=MAX_BATCH_ENTRIES)


class ClaimCreate(SignedFields):
    source: SliceId  # the production slice
    target: SliceId  # the consumption slice
    quantity_wh: QuantityWh | None = Field(default=None, alias="quantityWh")


class PlannedEntry(BaseModel):
    """One claim of the plan typed-data served; its other fields (whole, period, codes) may
    be sent back as served and are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    source: SliceId = Field(description="the production slice")
    quantity_wh: QuantityWh = Field(alias="quantityWh")


class AdvancedClaimCreate(SignedFields):
    """Claim a consumption slice's quantity from its wallet's production slices, the best
    matches first. `claims` is the plan typed-data served, as signed."""

    target: SliceId = Field(description="the consumption slice")
    quantity_wh: QuantityWh | None = Field(default=None, alias="quantityWh")
    fuel_code: str | None = Field(default=None, alias="fuelCode", max_length=32)
    tech_code: str | None = Field(default=None, alias="techCode", max_length=32)
    country_code: str | None = Field(default=None, alias="countryCode", max_length=8)
    require_overlap: StrictBool = Field(default=False, alias="requireOverlap")
    claims: list[PlannedEntry] = Field(min_length=1, max_length=MAX_BATCH_ENTRIES)


class OperatorSet(SignedFields):
    operator: Address
    approved: StrictBool


class WalletClose(SignedFields):
    pass


class WalletNameCreate(_In):
    public_key: Address = Field(alias="publicKey")
    name: str = Field(min_length=1, max_length=200)
    deadline: Deadline
    signature: Signature

    def signature_bytes(self) -> bytes:
        return bytes.fromhex(self.signature.removeprefix("0x"))


class WalletNameUpdate(_In):
    name: str = Field(min_length=1, max_length=200)
    revision: Uint
    deadline: Deadline
    signature: Signature

    def signature_bytes(self) -> bytes:
        return bytes.fromhex(self.signature.removeprefix("0x"))


class CertificateCreate(_In):
    """The issuing body issues one certificate (issueBatch of one); the header is kept
    off-chain (canonical JSON), its keccak256 goes on chain. Give `header` or `dataHash`."""

    idempotency_key: str = Field(alias="idempotencyKey", min_length=1, max_length=100)
    owner: Address
    kind: Literal["production", "consumption"]
    quantity_wh: QuantityWh = Field(alias="quantityWh")
    header: dict[str, Any] | None = None
    data_hash: str | None = Field(default=None, alias="dataHash")

    @field_validator("header", mode="before")
    @classmethod
    def _object(cls, value: object) -> object:
        if value is not None and not isinstance(value, dict):
            raise ValueError("the header is a JSON object")
        return value


# ------------------------------------------------------------------ responses


class TypedDataPublic(BaseModel):
    """EIP-712 typed data (eth_signTypedData_v4): sign it as is and send the fields back."""

    typed_data: dict[str, Any] = Field(serialization_alias="typedData")


class PlannedClaimPublic(BaseModel):
    source: int = Field(description="the production slice claimed from")
    quantity_wh: int = Field(serialization_alias="quantityWh")
    whole: bool = Field(description="the whole slice; else a part of it (split first)")
    period_start: datetime | None = Field(serialization_alias="periodStart")
    period_end: datetime | None = Field(serialization_alias="periodEnd")
    fuel_code: str | None = Field(serialization_alias="fuelCode")
    tech_code: str | None = Field(serialization_alias="techCode")
    country_code: str | None = Field(serialization_alias="countryCode")


class AdvancedClaimPlanPublic(BaseModel):
    target: int = Field(description="the consumption slice")
    wallet: str = Field(description="whose production slices are claimed")
    quantity_wh: int = Field(serialization_alias="quantityWh")
    period_start: datetime = Field(serialization_alias="periodStart")
    period_end: datetime = Field(serialization_alias="periodEnd")
    claims: list[PlannedClaimPublic] = Field(
        description="in order; send `source` and `quantityWh` of each back with the signature"
    )


class AdvancedClaimTypedDataPublic(BaseModel):
    typed_data: dict[str, Any] = Field(serialization_alias="typedData")
    plan: AdvancedClaimPlanPublic


class CommandAccepted(BaseModel):
    request_id: int = Field(serialization_alias="requestId")
    kind: str
    state: str
    links: dict[str, str]


class TransactionPublic(BaseModel):
    state: str
    tx_hash: str | None = Field(serialization_alias="txHash")
    block_number: int | None = Field(serialization_alias="blockNumber")
    error_code: str | None = Field(serialization_alias="errorCode")
    error_detail: str | None = Field(serialization_alias="errorDetail")


class RequestPublic(BaseModel):
    id: int
    kind: str
    signer: str
    nonce: int | None
    state: str
    tx_hash: str | None = Field(serialization_alias="txHash")
    transactions: list[TransactionPublic]
    commands: list[dict[str, Any]]
    created_at: datetime = Field(serialization_alias="createdAt")


class WalletNamePublic(BaseModel):
    public_key: str = Field(serialization_alias="publicKey")
    name: str
    revision: int
