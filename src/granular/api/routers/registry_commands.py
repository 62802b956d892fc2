"""Registry commands under /interface/registry/v1 (issue 8 §4): signed by the wallet owner
(or its operator) and relayed by the worker, or issued by the issuing body itself.

For each relayed command, `GET .../typed-data` serves the EIP-712 ForwardRequest to sign
(the forwarder's domain, the types, the message with the next forwarder nonce, a deadline,
the gas and the registry calldata). The command endpoint takes the command's fields, the
signed request fields and the signature, checks everything (signature, deadline, nonce, the
registry's rules) and answers `202` with a request id; `GET /requests/{id}` follows it to
its transaction hash. A doomed command is a 4xx naming the rule.

The service context (`RegistryCommands`: chain, addresses, read ports) is
`app.state.registry_commands`, set by the entry point; without it these routes answer 500
with `configuration_error`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from granular.api.deps import Caller, Now, Sessions, require_role
from granular.api.schemas_commands import (
    AdvancedClaimCreate,
    AdvancedClaimPlanPublic,
    AdvancedClaimTypedDataPublic,
    CertificateCreate,
    ClaimCreate,
    CommandAccepted,
    OperatorSet,
    PlannedClaimPublic,
    RequestPublic,
    TransactionPublic,
    TransferCreate,
    TransferListCreate,
    TypedDataPublic,
    WalletClose,
    WalletNameCreate,
    WalletNamePublic,
    WalletNameUpdate,
)
from granular.domain.commands import CloseWallet, Command, Transfer
from granular.domain.slices import Kind
from granular.services import advanced_claims
from granular.services import commands as service
from granular.services.accounts import Role
from granular.services.commands import Accepted, RegistryCommands, Signed

PREFIX = "/interface/registry/v1"
router = APIRouter(prefix=PREFIX, tags=["registry commands"])
# Who may hand the worker a signed command to relay (and so make it pay the gas); the
# signature, not the key, says whose slices move.
SIGNED_COMMAND_ROLES = (Role.BUYER, Role.DEVICE_OWNER, Role.ISSUER)

IdPath = Annotated[int, Path(ge=1, le=2**63 - 1)]
PublicKey = Annotated[str, Path(alias="publicKey", pattern=r"^0x[0-9a-fA-F]{40}$")]
FromQuery = Annotated[str, Query(alias="from", pattern=r"^0x[0-9a-fA-F]{40}$")]
AddressQuery = Annotated[str, Query(pattern=r"^0x[0-9a-fA-F]{40}$")]
OptionalWh = Annotated[int | None, Query(alias="quantityWh", ge=1, le=2**64 - 1)]
OptionalNonce = Annotated[int | None, Query(ge=0, le=2**256 - 1)]
OptionalDeadline = Annotated[int | None, Query(ge=0, le=2**48 - 1)]
OptionalGas = Annotated[int | None, Query(ge=0, le=2**64 - 1)]


def get_commands(request: Request) -> RegistryCommands:
    return service.require_configured(getattr(request.app.state, "registry_commands", None))


Commands = Annotated[RegistryCommands, Depends(get_commands)]


def _accepted(accepted: Accepted) -> CommandAccepted:
    return CommandAccepted(
        request_id=accepted.request_id,
        kind=accepted.kind,
        state=accepted.state,
        links={"request": f"{PREFIX}/requests/{accepted.request_id}"},
    )


def _signed(
    body: TransferCreate
    | TransferListCreate
    | ClaimCreate
    | AdvancedClaimCreate
    | OperatorSet
    | WalletClose,
) -> list[Signed]:
    return [Signed(body.nonce, body.deadline, body.gas, body.signature_bytes())]


def _relay(
    ctx: RegistryCommands,
    sessions: Sessions,
    now: Now,
    signer: str,
    commands: list[Command],
    signed: list[Signed],
) -> CommandAccepted:
    return _accepted(
        service.relay(ctx, sessions, signer=signer, commands=commands, signatures=signed, now=now)
    )


def _one(
    ctx: RegistryCommands,
    sessions: Sessions,
    signer: str,
    command: Command,
    nonce: int | None,
    deadline: int | None,
    gas: int | None,
) -> TypedDataPublic:
    (typed,) = service.typed_data(
        ctx, sessions, signer=signer, commands=[command], nonce=nonce, deadline_s=deadline, gas=gas
    )
    return TypedDataPublic(typed_data=typed)


# ------------------------------------------------------------------ slices


@router.get("/slices/{sliceID}/transfer/typed-data", response_model=TypedDataPublic)
def transfer_typed_data(
    caller: Caller,
    ctx: Commands,
    sessions: Sessions,
    slice_id: Annotated[int, Path(alias="sliceID", ge=1)],
    from_: FromQuery,
    to: AddressQuery,
    quantity_wh: OptionalWh = None,
    nonce: OptionalNonce = None,
    deadline: OptionalDeadline = None,
    gas: OptionalGas = None,
) -> TypedDataPublic:
    command = service.transfer(slice_id, to, quantity_wh)
    return _one(ctx, sessions, from_, command, nonce, deadline, gas)


@router.post("/slices/{sliceID}/transfer", status_code=202, response_model=CommandAccepted)
def transfer_slice(
    caller: Caller,
    ctx: Commands,
    sessions: Sessions,
    now: Now,
    slice_id: Annotated[int, Path(alias="sliceID", ge=1)],
    body: TransferCreate,
) -> CommandAccepted:
    """Send a slice (or `quantityWh` of it: transferPart) to `to`, signed by its owner."""
    require_role(caller, *SIGNED_COMMAND_ROLES)
    command = service.transfer(slice_id, body.to, body.quantity_wh)
    return _relay(ctx, sessions, now, body.from_, [command], _signed(body))


@router.get("/slices/transfer/typed-data", response_model=TypedDataPublic)
def transfer_list_typed_data(
    caller: Caller,
    ctx: Commands,
    sessions: Sessions,
    from_: FromQuery,
    transfer: Annotated[
        list[str],
        Query(
            description="sliceId:to[:quantityWh], repeated; all signed as one transferBatch",
            min_length=1,
            max_length=100,
        ),
    ],
    nonce: OptionalNonce = None,
    deadline: OptionalDeadline = None,
    gas: OptionalGas = None,
) -> TypedDataPublic:
    command = service.transfer_list([_parse_transfer(item) for item in transfer])
    return _one(ctx, sessions, from_, command, nonce, deadline, gas)


def _parse_transfer(item: str) -> Transfer:
    parts = item.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[::2]):
        raise service.InvalidField("transfer", item, "sliceId:to[:quantityWh]")
    quantity = int(parts[2]) if len(parts) == 3 else None
    return service.transfer(int(parts[0]), parts[1], quantity)


@router.post("/slices/transfer", status_code=202, response_model=CommandAccepted)
def transfer_slices(
    caller: Caller, ctx: Commands, sessions: Sessions, now: Now, body: TransferListCreate
) -> CommandAccepted:
    """Several transfers of one signer, signed once, relayed as one transferBatch (all or
    nothing, in order)."""
    require_role(caller, *SIGNED_COMMAND_ROLES)
    command = service.transfer_list(
        [service.transfer(t.slice_id, t.to, t.quantity_wh) for t in body.transfers]
    )
    return _relay(ctx, sessions, now, body.from_, [command], _signed(body))


@router.delete("/slices/{sliceID}", status_code=202, response_model=CommandAccepted)
def withdraw_slice(
    caller: Caller,
    ctx: Commands,
    sessions: Sessions,
    now: Now,
    slice_id: Annotated[int, Path(alias="sliceID", ge=1, le=2**63 - 1)],
) -> CommandAccepted:
    """The issuing body withdraws an Active slice."""
    require_role(caller, Role.ISSUER)
    return _accepted(service.withdraw_slices(ctx, sessions, slice_ids=[slice_id], now=now))


# ------------------------------------------------------------------ claims


@router.get("/claims/slices/typed-data", response_model=TypedDataPublic)
def claim_typed_data(
    caller: Caller,
    ctx: Commands,
    sessions: Sessions,
    from_: FromQuery,
    source: Annotated[int, Query(ge=1)],
    target: Annotated[int, Query(ge=1)],
    quantity_wh: OptionalWh = None,
    nonce: OptionalNonce = None,
    deadline: OptionalDeadline = None,
    gas: OptionalGas = None,
) -> TypedDataPublic:
    """Without `quantityWh`: claim when both slices are equal, else claimPart of the smaller."""
    command = service.resolve_claim(ctx, service.claim(source, target, quantity_wh))
    return _one(ctx, sessions, from_, command, nonce, deadline, gas)


@router.post("/claims/slices", status_code=202, response_model=CommandAccepted)
def claim_slices(
    caller: Caller, ctx: Commands, sessions: Sessions, now: Now, body: ClaimCreate
) -> CommandAccepted:
    """Claim production slice `source` against consumption slice `target`."""
    require_role(caller, *SIGNED_COMMAND_ROLES)
    command = service.resolve_claim(ctx, service.claim(body.source, body.target, body.quantity_wh))
    return _relay(ctx, sessions, now, body.from_, [command], _signed(body))


def _plan_public(advanced: advanced_claims.AdvancedPlan) -> AdvancedClaimPlanPublic:
    return AdvancedClaimPlanPublic(
        target=advanced.target,
        wallet=advanced.wallet,
        quantity_wh=advanced.quantity_wh,
        period_start=advanced.period_start,
        period_end=advanced.period_end,
        claims=[
            PlannedClaimPublic(
                source=s.claim.production_slice_id,
                quantity_wh=s.claim.quantity_wh,
                whole=s.claim.whole,
                period_start=s.candidate.period_start,
                period_end=s.candidate.period_end,
                fuel_code=s.candidate.fuel_code,
                tech_code=s.candidate.tech_code,
                country_code=s.candidate.country,
            )
            for s in advanced.sources
        ],
    )


Code = Annotated[str | None, Query(max_length=32)]


@router.get("/claims/advanced/typed-data", response_model=AdvancedClaimTypedDataPublic)
def advanced_claim_typed_data(
    caller: Caller,
    ctx: Commands,
    sessions: Sessions,
    from_: FromQuery,
    target: Annotated[int, Query(ge=1, description="the consumption slice")],
    quantity_wh: OptionalWh = None,
    fuel_code: Annotated[Code, Query(alias="fuelCode")] = None,
    tech_code: Annotated[Code, Query(alias="techCode")] = None,
    country_code: Annotated[Code, Query(alias="countryCode")] = None,
    require_overlap: Annotated[bool, Query(alias="requireOverlap")] = False,
    nonce: OptionalNonce = None,
    deadline: OptionalDeadline = None,
    gas: OptionalGas = None,
) -> AdvancedClaimTypedDataPublic:
    """The plan (which production slices, how much of each, best matches first: the same
    period, then overlapping, then fuelCode, techCode and countryCode as preferred, then the
    older slice) and the one claimBatch request to sign for it."""
    advanced = advanced_claims.plan(
        ctx,
        sessions,
        target=target,
        quantity_wh=quantity_wh,
        preferences=advanced_claims.preferences(
            fuel_code, tech_code, country_code, require_overlap
        ),
    )
    typed = advanced_claims.typed_data(
        ctx, sessions, signer=from_, advanced=advanced, nonce=nonce, deadline_s=deadline, gas=gas
    )
    return AdvancedClaimTypedDataPublic(typed_data=typed, plan=_plan_public(advanced))


@router.post("/claims/advanced", status_code=202, response_model=CommandAccepted)
def advanced_claim(
    caller: Caller, ctx: Commands, sessions: Sessions, now: Now, body: AdvancedClaimCreate
) -> CommandAccepted:
    """Claim consumption slice `target` from its wallet's production slices, as planned by
    typed-data; 409 `advanced_claim_plan_changed` when the plan is no longer the best."""
    require_role(caller, *SIGNED_COMMAND_ROLES)
    (signed,) = _signed(body)
    accepted = advanced_claims.relay(
        ctx,
        sessions,
        signer=body.from_,
        target=body.target,
        quantity_wh=body.quantity_wh,
        preferences=advanced_claims.preferences(
            body.fuel_code, body.tech_code, body.country_code, body.require_overlap
        ),
        signed_plan=[{"source": c.source, "quantityWh": c.quantity_wh} for c in body.claims],
        signed=signed,
        now=now,
    )
    return _accepted(accepted)


# ------------------------------------------------------------------ wallets


@router.get("/wallets/{publicKey}/close/typed-data", response_model=TypedDataPublic)
def close_wallet_typed_data(
    caller: Caller,
    ctx: Commands,
    sessions: Sessions,
    public_key: PublicKey,
    nonce: OptionalNonce = None,
    deadline: OptionalDeadline = None,
    gas: OptionalGas = None,
) -> TypedDataPublic:
    return _one(ctx, sessions, public_key, CloseWallet(), nonce, deadline, gas)


@router.delete("/wallets/{publicKey}", status_code=202, response_model=CommandAccepted)
def close_wallet(
    caller: Caller,
    ctx: Commands,
    sessions: Sessions,
    now: Now,
    public_key: PublicKey,
    body: WalletClose,
) -> CommandAccepted:
    """Close a wallet (closeWallet), signed by it: only with no Active slice left."""
    require_role(caller, *SIGNED_COMMAND_ROLES)
    if service.checksum("publicKey", public_key) != service.checksum("from", body.from_):
        raise service.InvalidField("from", body.from_, "the wallet being closed signs")
    return _relay(ctx, sessions, now, body.from_, [CloseWallet()], _signed(body))


@router.get("/wallets/{publicKey}/operators/typed-data", response_model=TypedDataPublic)
def operator_typed_data(
    caller: Caller,
    ctx: Commands,
    sessions: Sessions,
    public_key: PublicKey,
    operator: AddressQuery,
    approved: bool,
    nonce: OptionalNonce = None,
    deadline: OptionalDeadline = None,
    gas: OptionalGas = None,
) -> TypedDataPublic:
    command = service.set_operator(operator, approved)
    return _one(ctx, sessions, public_key, command, nonce, deadline, gas)


@router.post("/wallets/{publicKey}/operators", status_code=202, response_model=CommandAccepted)
def set_operator(
    caller: Caller,
    ctx: Commands,
    sessions: Sessions,
    now: Now,
    public_key: PublicKey,
    body: OperatorSet,
) -> CommandAccepted:
    """Approve (or revoke) an operator of the wallet (setOperator), signed by the wallet."""
    require_role(caller, *SIGNED_COMMAND_ROLES)
    if service.checksum("publicKey", public_key) != service.checksum("from", body.from_):
        raise service.InvalidField("from", body.from_, "the wallet itself signs setOperator")
    command = service.set_operator(body.operator, body.approved)
    return _relay(ctx, sessions, now, body.from_, [command], _signed(body))


@router.get("/wallets/{publicKey}/name/typed-data", response_model=TypedDataPublic)
def wallet_name_typed_data(
    caller: Caller,
    ctx: Commands,
    sessions: Sessions,
    now: Now,
    public_key: PublicKey,
    name: Annotated[str, Query(min_length=1, max_length=200)],
) -> TypedDataPublic:
    """What the wallet signs to be named (POST /wallets) or renamed (PATCH)."""
    typed = service.wallet_name_typed_data(ctx, sessions, wallet=public_key, name=name, now=now)
    return TypedDataPublic(typed_data=typed)


@router.post("/wallets", status_code=201, response_model=WalletNamePublic)
def name_wallet(
    caller: Caller, ctx: Commands, sessions: Sessions, now: Now, body: WalletNameCreate
) -> WalletNamePublic:
    require_role(caller, *SIGNED_COMMAND_ROLES)
    named = service.name_wallet(
        ctx,
        sessions,
        wallet=body.public_key,
        name=body.name,
        revision=0,
        deadline_s=body.deadline,
        signature=body.signature_bytes(),
        create=True,
        now=now,
    )
    return WalletNamePublic(public_key=named.address, name=named.name, revision=named.revision)


@router.patch("/wallets/{publicKey}", response_model=WalletNamePublic)
def rename_wallet(
    caller: Caller,
    ctx: Commands,
    sessions: Sessions,
    now: Now,
    public_key: PublicKey,
    body: WalletNameUpdate,
) -> WalletNamePublic:
    require_role(caller, *SIGNED_COMMAND_ROLES)
    named = service.name_wallet(
        ctx,
        sessions,
        wallet=public_key,
        name=body.name,
        revision=body.revision,
        deadline_s=body.deadline,
        signature=body.signature_bytes(),
        create=False,
        now=now,
    )
    return WalletNamePublic(public_key=named.address, name=named.name, revision=named.revision)


# ------------------------------------------------------------------ certificates


@router.post("/certificates", status_code=202, response_model=CommandAccepted)
def issue_certificate(
    caller: Caller, ctx: Commands, sessions: Sessions, now: Now, body: CertificateCreate
) -> CommandAccepted:
    """The issuing body issues one certificate (issueBatch of one), sent by the worker."""
    require_role(caller, Role.ISSUER)
    accepted = service.issue(
        ctx,
        sessions,
        organization=caller.organization,
        idempotency_key=body.idempotency_key,
        owner=body.owner,
        kind=Kind.PRODUCTION if body.kind == "production" else Kind.CONSUMPTION,
        quantity_wh=body.quantity_wh,
        header=body.header,
        data_hash_hex=body.data_hash,
        now=now,
    )
    return _accepted(accepted)


@router.delete("/certificates/{certificateID}", status_code=202, response_model=CommandAccepted)
def withdraw_certificate(
    caller: Caller,
    ctx: Commands,
    sessions: Sessions,
    now: Now,
    certificate_id: Annotated[int, Path(alias="certificateID", ge=1, le=2**63 - 1)],
) -> CommandAccepted:
    """The issuing body withdraws every Active slice of a certificate."""
    require_role(caller, Role.ISSUER)
    return _accepted(
        service.withdraw_certificate(ctx, sessions, certificate_id=certificate_id, now=now)
    )


# ------------------------------------------------------------------ requests


@router.get("/requests/{id}", response_model=RequestPublic)
def show_request(caller: Caller, ctx: Commands, sessions: Sessions, id: IdPath) -> RequestPublic:
    found = service.status(ctx, sessions, id)
    return RequestPublic(
        id=found.request_id,
        kind=found.kind,
        signer=found.signer,
        nonce=found.nonce,
        state=found.state,
        tx_hash=found.tx_hash,
        transactions=[
            TransactionPublic(
                state=t.state,
                tx_hash=t.tx_hash,
                block_number=t.block_number,
                error_code=t.error_code,
                error_detail=t.error_detail,
            )
            for t in found.transactions
        ],
        commands=list(found.summary.get("commands", [])),
        created_at=found.created_at,
    )
