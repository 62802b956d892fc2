"""Registry commands over HTTP: what to sign, then check, store and relay (issue 8 §4).

Guarantees:
- Nothing is stored for a command that fails a check: the signature recovers `from`, the
  deadline is ahead, the forwarder nonce is the next free one, and the registry's own rules
  (the pure model of domain/slices.py, on the state the read port reports) accept it. A
  doomed command is a 4xx naming the rule, never a mined revert.
- An accepted command is one row of `registry_commands` and its outbox request(s), added in
  one database transaction; the outbox sends them (relayed: `to` = the forwarder, data =
  `execute(request)`, the worker pays).
- Nobody moves a slice without a signature of its owner or of an operator the owner
  approved: the signer becomes the registry's caller, and the model checks its permission.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from eth_utils.address import is_hex_address, to_checksum_address
from eth_utils.crypto import keccak
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain import forwarder as fwd
from granular.adapters.db import commands as db
from granular.adapters.db.headers import put_headers
from granular.adapters.db.outbox import RequestState
from granular.domain import commands as rules
from granular.domain.commands import (
    DEFAULT_DEADLINE_MARGIN_S,
    DEFAULT_REQUEST_GAS,
    Claim,
    ClaimBatch,
    CloseWallet,
    Command,
    ForwardRequest,
    Issue,
    RegistryView,
    RelayView,
    SetOperator,
    Transfer,
    TransferBatch,
    Withdraw,
)
from granular.domain.gas import Tier
from granular.domain.headers import canonical_json, data_hash
from granular.domain.slices import Kind, Slice, SliceState
from granular.errors import ConfigurationError, Conflict, FieldRuleError, NotFound, ValidationError
from granular.services import outbox

DEFAULT_VALIDITY_S = 3600  # the deadline typed-data proposes: an hour of chain time
MAX_WH = (1 << 64) - 1  # the registry's uint64 quantity


class InvalidField(FieldRuleError, ValidationError):
    code = "command_field_invalid"


class CommandNotFound(NotFound):
    code = "request_not_found"

    def __init__(self, command_id: int) -> None:
        super().__init__(f"no request {command_id}", {"field": "id", "value": command_id})


class CertificateNotFound(NotFound):
    code = "certificate_not_found"

    def __init__(self, certificate_id: int) -> None:
        super().__init__(
            f"no certificate {certificate_id}", {"field": "id", "value": certificate_id}
        )


class NothingToWithdraw(Conflict):
    code = "nothing_to_withdraw"

    def __init__(self, certificate_id: int) -> None:
        super().__init__(
            f"certificate {certificate_id} has no Active slice to withdraw",
            {"field": "id", "value": certificate_id},
        )


class CertificateView(Protocol):
    """The certificate's slices (for withdrawing a certificate): the mirror later."""

    def slice(self, slice_id: int) -> Slice | None: ...

    def children(self, slice_id: int) -> list[int]: ...


@dataclass
class RegistryCommands:
    """Where commands go and what they are checked against; built once by the entry point."""

    chain_id: int
    registry: str
    forwarder: str
    relayer: str  # the outbox signer: pays for relayed commands, holds ISSUER_ROLE
    view: RegistryView
    relay_view: RelayView
    certificates: CertificateView
    deadline_margin_s: int = DEFAULT_DEADLINE_MARGIN_S
    tier: Tier = Tier.STANDARD


@dataclass(frozen=True, slots=True)
class Signed:
    """The request fields the client sends back with its signature; gas None: the gas
    typed-data proposed for the command (domain.commands.proposed_gas)."""

    nonce: int
    deadline_s: int
    gas: int | None
    signature: bytes


@dataclass(frozen=True, slots=True)
class Accepted:
    request_id: int
    kind: str
    state: str


@dataclass(frozen=True, slots=True)
class Transaction:
    state: str
    tx_hash: str | None
    block_number: int | None
    error_code: str | None
    error_detail: str | None


@dataclass(frozen=True, slots=True)
class CommandStatus:
    request_id: int
    kind: str
    signer: str
    nonce: int | None
    state: str  # accepted | pending | confirmed | reverted | failed
    tx_hash: str | None  # of the first transaction
    transactions: list[Transaction]
    summary: dict[str, Any]
    created_at: datetime


# ------------------------------------------------------------------ values


def checksum(field: str, address: str) -> str:
    if not isinstance(address, str) or not is_hex_address(address):
        raise InvalidField(field, address, "a 0x-prefixed 20-byte hex address")
    checksummed: str = to_checksum_address(address)
    if int(checksummed, 16) == 0:
        raise InvalidField(field, address, "not the zero address")
    return checksummed


def _quantity(field: str, quantity_wh: int | None) -> int | None:
    if quantity_wh is not None and not 1 <= quantity_wh <= MAX_WH:
        raise InvalidField(field, quantity_wh, f"1 to {MAX_WH} Wh")
    return quantity_wh


def transfer(slice_id: int, to: str, quantity_wh: int | None = None) -> Transfer:
    return Transfer(slice_id, checksum("to", to), _quantity("quantityWh", quantity_wh))


def transfer_list(transfers: list[Transfer]) -> TransferBatch:
    """Several transfers signed once and sent as one transferBatch."""
    if not 1 <= len(transfers) <= rules.MAX_BATCH_ENTRIES:
        raise InvalidField("transfers", len(transfers), f"1 to {rules.MAX_BATCH_ENTRIES} entries")
    return TransferBatch(tuple(transfers))


def claim(source: int, target: int, quantity_wh: int | None = None) -> Claim:
    return Claim(source, target, _quantity("quantityWh", quantity_wh))


def set_operator(operator: str, approved: bool) -> SetOperator:
    return SetOperator(checksum("operator", operator), approved)


def calldata(command: Command) -> bytes:
    """The registry call a command is (DESIGN §5 names and argument order)."""
    if isinstance(command, Transfer):
        if command.quantity_wh is None:
            return fwd.registry_calldata("transfer", command.slice_id, command.to)
        return fwd.registry_calldata(
            "transferPart", command.slice_id, command.quantity_wh, command.to
        )
    if isinstance(command, Claim):
        if command.quantity_wh is None:
            return fwd.registry_calldata(
                "claim", command.production_slice_id, command.consumption_slice_id
            )
        return fwd.registry_calldata(
            "claimPart",
            command.production_slice_id,
            command.consumption_slice_id,
            command.quantity_wh,
        )
    if isinstance(command, TransferBatch):
        return fwd.registry_calldata(
            "transferBatch", [(t.slice_id, t.quantity_wh or 0, t.to) for t in command.entries]
        )
    if isinstance(command, ClaimBatch):
        return fwd.registry_calldata(
            "claimBatch",
            [
                (c.production_slice_id, c.consumption_slice_id, c.quantity_wh or 0)
                for c in command.entries
            ],
        )
    if isinstance(command, CloseWallet):
        return fwd.registry_calldata("closeWallet")
    if isinstance(command, SetOperator):
        return fwd.registry_calldata("setOperator", command.operator, command.approved)
    if isinstance(command, Withdraw):
        return fwd.registry_calldata("withdraw", command.slice_id)
    return fwd.registry_calldata(
        "issueBatch",
        command.batch_id,
        [(command.owner, int(command.kind), command.quantity_wh, command.data_hash)],
    )


def summary(command: Command) -> dict[str, Any]:
    if isinstance(command, TransferBatch | ClaimBatch):
        return {"entries": [summary(entry) for entry in command.entries]}
    if isinstance(command, Transfer):
        return {"sliceId": command.slice_id, "to": command.to, "quantityWh": command.quantity_wh}
    if isinstance(command, Claim):
        return {
            "source": command.production_slice_id,
            "target": command.consumption_slice_id,
            "quantityWh": command.quantity_wh,
        }
    if isinstance(command, SetOperator):
        return {"operator": command.operator, "approved": command.approved}
    if isinstance(command, Withdraw):
        return {"sliceId": command.slice_id}
    if isinstance(command, Issue):
        return {
            "owner": command.owner,
            "kind": command.kind.name.lower(),
            "quantityWh": command.quantity_wh,
            "dataHash": "0x" + command.data_hash.hex(),
        }
    return {}


def kind_of(commands: list[Command]) -> str:
    names = {
        Transfer: "transfer",
        Claim: "claim",
        TransferBatch: "transfer_list",
        ClaimBatch: "claim_list",
        CloseWallet: "close_wallet",
        SetOperator: "set_operator",
        Withdraw: "withdraw",
        Issue: "issue",
    }
    kind = names[type(commands[0])]
    return f"{kind}_batch" if len(commands) > 1 else kind


# ------------------------------------------------------------------ relayed: what to sign


def resolve_claim(ctx: RegistryCommands, command: Claim) -> Claim:
    """A claim without a quantity is `claim` when both sides are equal, else `claimPart` of
    the smaller side (DESIGN §4: the default quantity is the min)."""
    if command.quantity_wh is not None:
        return command
    production = ctx.view.slice(command.production_slice_id)
    consumption = ctx.view.slice(command.consumption_slice_id)
    if production is None or consumption is None:
        return command  # the rule check names the unknown slice
    if production.quantity_wh == consumption.quantity_wh:
        return command
    return Claim(
        command.production_slice_id,
        command.consumption_slice_id,
        min(production.quantity_wh, consumption.quantity_wh),
    )


def _next_nonce(ctx: RegistryCommands, sessions: sessionmaker[Session], signer: str) -> int:
    with sessions() as session:
        pending = db.pending_nonces(session=session, chain_id=ctx.chain_id, signer=signer)
    return max([ctx.relay_view.forwarder_nonce(signer), *(n + 1 for n in pending)])


def typed_data(
    ctx: RegistryCommands,
    sessions: sessionmaker[Session],
    *,
    signer: str,
    commands: list[Command],
    nonce: int | None = None,
    deadline_s: int | None = None,
    gas: int | None = None,
) -> list[dict[str, Any]]:
    """One EIP-712 ForwardRequest per command, with consecutive nonces from the next free
    one (or `nonce`), and the gas to sign (`gas`, else proposed per command). A command the
    registry would refuse is refused here already."""
    signer = checksum("from", signer)
    proposed = rules.checked_gas(ctx.view, signer, commands)
    first = _next_nonce(ctx, sessions, signer) if nonce is None else nonce
    if deadline_s is None:
        deadline_s = ctx.relay_view.chain_time_s() + DEFAULT_VALIDITY_S
    if gas is not None:
        rules.check_gas(gas)
    return [
        fwd.typed_data(
            chain_id=ctx.chain_id,
            forwarder=ctx.forwarder,
            request=_request(
                ctx,
                signer,
                command,
                Signed(first + i, deadline_s, gas, b""),
                gas if gas is not None else proposed[i],
            ),
        )
        for i, command in enumerate(commands)
    ]


def _request(
    ctx: RegistryCommands, signer: str, command: Command, signed: Signed, gas: int
) -> ForwardRequest:
    """The ForwardRequest `signed` is over, forwarding `gas` (as signed, or proposed)."""
    return ForwardRequest(
        from_address=signer,
        to=to_checksum_address(ctx.registry),
        value_wei=0,
        gas=gas,
        nonce=signed.nonce,
        deadline_s=signed.deadline_s,
        data=calldata(command),
    )


# ------------------------------------------------------------------ relayed: accept


def relay(
    ctx: RegistryCommands,
    sessions: sessionmaker[Session],
    *,
    signer: str,
    commands: list[Command],
    signatures: list[Signed],
    now: datetime,
    kind: str | None = None,
) -> Accepted:
    """Check signed commands of one signer and queue them as one relayed transaction
    (`execute`, or `executeBatch` for several). Checks run in the order of the module doc.
    `kind` names the request (default: from the commands)."""
    signer = checksum("from", signer)
    if not commands or len(commands) != len(signatures):
        raise InvalidField("signatures", len(signatures), "one signed request per command")
    # A bulk command signed with the gas typed-data proposed needs the model's run for it;
    # that run is the rule check too, so it is not repeated below.
    checked = any(
        s.gas is None and rules.is_bulk(c) for c, s in zip(commands, signatures, strict=True)
    )
    proposed = (
        rules.checked_gas(ctx.view, signer, commands)
        if checked
        else [DEFAULT_REQUEST_GAS] * len(commands)
    )
    requests = [
        _request(ctx, signer, command, signed, proposed[i] if signed.gas is None else signed.gas)
        for i, (command, signed) in enumerate(zip(commands, signatures, strict=True))
    ]
    recovered = [
        fwd.recover_signer(
            chain_id=ctx.chain_id,
            forwarder=ctx.forwarder,
            request=request,
            signature=signed.signature,
        )
        for request, signed in zip(requests, signatures, strict=True)
    ]
    with sessions() as session:
        pending = db.pending_nonces(session=session, chain_id=ctx.chain_id, signer=signer)
    rules.check_relay(
        requests,
        recovered=recovered,
        chain_time_s=ctx.relay_view.chain_time_s(),
        chain_nonce=ctx.relay_view.forwarder_nonce(signer),
        pending_nonces=pending,
        margin_s=ctx.deadline_margin_s,
    )
    if not checked:
        rules.check_commands(ctx.view, signer, commands)

    digests = b"".join(
        fwd.request_digest(chain_id=ctx.chain_id, forwarder=ctx.forwarder, request=r)
        for r in requests
    )
    key = "relay:0x" + keccak(digests).hex()
    pairs = [(r, s.signature) for r, s in zip(requests, signatures, strict=True)]
    data = fwd.execute_calldata(*pairs[0]) if len(pairs) == 1 else fwd.execute_batch_calldata(pairs)
    kind = kind or kind_of(commands)
    with sessions.begin() as session:
        # Checked again under the signer's lock: another request for the same nonce may have
        # been accepted since the check above.
        db.lock_signer(session=session, chain_id=ctx.chain_id, signer=signer)
        held = set(db.pending_nonces(session=session, chain_id=ctx.chain_id, signer=signer))
        taken = [r.nonce for r in requests if r.nonce in held]
        if taken:
            raise rules.NonceUsed(signer, taken[0], "a request in flight")
        submitted = outbox.submit(
            session=session,
            chain_id=ctx.chain_id,
            signer=ctx.relayer,
            idempotency_key=key,
            to=ctx.forwarder,
            data=data,
            tier=ctx.tier,
            items=len(commands),
            gas_limit=rules.relay_gas_limit([r.gas for r in requests], len(data)),
            now=now,
        )
        if not submitted.created:  # the very same signed request(s), sent again
            raise rules.NonceUsed(signer, requests[0].nonce, "a request already accepted")
        command_id = db.add_command(
            session=session,
            chain_id=ctx.chain_id,
            kind=kind,
            signer=signer,
            nonce=requests[0].nonce,
            nonce_count=len(requests),
            deadline_s=min(r.deadline_s for r in requests),
            relay_key=key,
            tx_keys=[key],
            summary={"commands": [summary(c) for c in commands]},
            now=now,
        )
    return Accepted(command_id, kind, "accepted")


# ------------------------------------------------------------------ the issuer's own commands


def issue(
    ctx: RegistryCommands,
    sessions: sessionmaker[Session],
    *,
    organization: str,
    idempotency_key: str,
    owner: str,
    kind: Kind,
    quantity_wh: int,
    header: dict[str, Any] | None,
    data_hash_hex: str | None,
    now: datetime,
) -> Accepted:
    """One certificate, issued directly by the issuing body (issueBatch of one)."""
    owner = checksum("owner", owner)
    _quantity("quantityWh", quantity_wh)
    if not 1 <= len(idempotency_key) <= 100:
        raise InvalidField("idempotencyKey", idempotency_key, "1 to 100 characters")
    if (header is None) == (data_hash_hex is None):
        raise InvalidField("header", None, "give exactly one of header and dataHash")
    canonical = canonical_json(header) if header is not None else None
    if canonical is not None:
        digest = data_hash(canonical)
    else:
        assert data_hash_hex is not None
        digest = _bytes32("dataHash", data_hash_hex)
    key = f"certificate:{organization}:{idempotency_key}"
    command = Issue(owner, kind, quantity_wh, digest, keccak(text=key))
    rules.check_commands(ctx.view, ctx.relayer, [command], issuer=True)
    with sessions.begin() as session:
        existing = _existing(session, ctx, key)
        submitted = outbox.submit(
            session=session,
            chain_id=ctx.chain_id,
            signer=ctx.relayer,
            idempotency_key=key,
            to=ctx.registry,
            data=calldata(command),
            tier=ctx.tier,
            items=1,
            now=now,
        )
        if existing is not None and not submitted.created:
            return Accepted(existing.id, existing.kind, "accepted")
        if canonical is not None:
            put_headers(session=session, headers=[("0x" + digest.hex(), canonical)], now=now)
        command_id = db.add_command(
            session=session,
            chain_id=ctx.chain_id,
            kind="issue",
            signer=ctx.relayer,
            nonce=None,
            nonce_count=0,
            deadline_s=None,
            relay_key=key,
            tx_keys=[key],
            summary={"commands": [summary(command)]},
            now=now,
        )
    return Accepted(command_id, "issue", "accepted")


def _existing(session: Session, ctx: RegistryCommands, key: str) -> db.CommandRecord | None:
    return db.command_for_relay_key(session=session, chain_id=ctx.chain_id, relay_key=key)


def _bytes32(field: str, value: str) -> bytes:
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != 32 or not value.startswith("0x"):
        raise InvalidField(field, value, "0x and 64 hex digits")
    return raw


def withdraw_slices(
    ctx: RegistryCommands, sessions: sessionmaker[Session], *, slice_ids: list[int], now: datetime
) -> Accepted:
    """The issuing body withdraws Active slices: one `withdraw` transaction each."""
    commands: list[Command] = [Withdraw(slice_id) for slice_id in slice_ids]
    rules.check_commands(ctx.view, ctx.relayer, commands, issuer=True)
    keys = [f"withdraw:{slice_id}" for slice_id in slice_ids]
    with sessions.begin() as session:
        for key, command in zip(keys, commands, strict=True):
            outbox.submit(
                session=session,
                chain_id=ctx.chain_id,
                signer=ctx.relayer,
                idempotency_key=key,
                to=ctx.registry,
                data=calldata(command),
                tier=ctx.tier,
                items=1,
                now=now,
            )
        command_id = db.add_command(
            session=session,
            chain_id=ctx.chain_id,
            kind="withdraw",
            signer=ctx.relayer,
            nonce=None,
            nonce_count=0,
            deadline_s=None,
            relay_key=None,
            tx_keys=keys,
            summary={"commands": [summary(c) for c in commands]},
            now=now,
        )
    return Accepted(command_id, "withdraw", "accepted")


def active_slices_of_certificate(ctx: RegistryCommands, certificate_id: int) -> list[int]:
    """The certificate's Active slices, by walking its splits from the initial slice."""
    initial = ctx.certificates.slice(certificate_id)
    if initial is None or initial.certificate_id != certificate_id:
        raise CertificateNotFound(certificate_id)
    active: list[int] = []
    todo = [initial]
    while todo:
        current = todo.pop()
        if current.state == SliceState.ACTIVE:
            active.append(current.slice_id)
        elif current.state == SliceState.REMOVED:
            for child in ctx.certificates.children(current.slice_id):
                found = ctx.certificates.slice(child)
                if found is not None:
                    todo.append(found)
    return sorted(active)


def withdraw_certificate(
    ctx: RegistryCommands, sessions: sessionmaker[Session], *, certificate_id: int, now: datetime
) -> Accepted:
    slice_ids = active_slices_of_certificate(ctx, certificate_id)
    if not slice_ids:
        raise NothingToWithdraw(certificate_id)
    return withdraw_slices(ctx, sessions, slice_ids=slice_ids, now=now)


# ------------------------------------------------------------------ status


def status(
    ctx: RegistryCommands, sessions: sessionmaker[Session], command_id: int
) -> CommandStatus:
    with sessions() as session:
        record = db.get_command(session=session, command_id=command_id)
        if record is None or record.chain_id != ctx.chain_id:
            raise CommandNotFound(command_id)
        found = [
            outbox.outcome(session=session, chain_id=ctx.chain_id, idempotency_key=key)
            for key in record.tx_keys
        ]
    transactions = [
        Transaction(o.state.value, o.tx_hash, o.block_number, o.error_code, o.error_detail)
        for o in found
        if o is not None
    ]
    if record.nonce_count > 1:
        transactions = [_batch_result(ctx, t) for t in transactions]
    return CommandStatus(
        request_id=record.id,
        kind=record.kind,
        signer=record.signer,
        nonce=record.nonce,
        state=_overall([RequestState(t.state) for t in transactions]),
        tx_hash=transactions[0].tx_hash if transactions else None,
        transactions=transactions,
        summary=record.summary,
        created_at=record.created_at,
    )


def _batch_result(ctx: RegistryCommands, transaction: Transaction) -> Transaction:
    """A confirmed executeBatch whose inner calls did not all run is reported failed: the
    forwarder consumed those nonces and nothing moved for them."""
    if transaction.state != RequestState.CONFIRMED.value or transaction.tx_hash is None:
        return transaction
    executed = ctx.relay_view.forwarded(transaction.tx_hash)
    failed = [index for index, ran in enumerate(executed) if not ran]
    if not failed:
        return transaction
    return Transaction(
        RequestState.REVERTED.value,
        transaction.tx_hash,
        transaction.block_number,
        "ForwardRequestFailed",
        f"the registry refused the relayed requests at positions {failed}",
    )


def _overall(states: list[RequestState]) -> str:
    """confirmed when every transaction is; reverted/failed as soon as one is; else pending
    (accepted while none is signed yet)."""
    for final in (RequestState.REVERTED, RequestState.FAILED):
        if final in states:
            return final.value
    if states and all(s == RequestState.CONFIRMED for s in states):
        return "confirmed"
    if all(s == RequestState.QUEUED for s in states):
        return "accepted"
    return "pending"


def require_configured(ctx: RegistryCommands | None) -> RegistryCommands:
    if ctx is None:
        raise ConfigurationError(
            "registry commands are not configured (no chain connection for the API)"
        )
    return ctx


# ------------------------------------------------------------------ wallet names


class WalletAlreadyNamed(Conflict):
    code = "wallet_already_named"

    def __init__(self, wallet: str) -> None:
        super().__init__(
            f"wallet {wallet} already has a name; change it with PATCH",
            {"field": "publicKey", "value": wallet},
        )


class WalletNotNamed(NotFound):
    code = "wallet_not_named"

    def __init__(self, wallet: str) -> None:
        super().__init__(
            f"wallet {wallet} has no name yet; name it with POST /wallets",
            {"field": "publicKey", "value": wallet},
        )


class StaleRevision(Conflict):
    code = "wallet_name_revision_stale"

    def __init__(self, wallet: str, revision: int, current: int) -> None:
        super().__init__(
            f"wallet {wallet}: revision={revision} was signed, the name is at {current}; "
            "sign the current revision",
            {"field": "revision", "value": revision, "expected": current},
        )


@dataclass(frozen=True, slots=True)
class NamedWallet:
    address: str
    name: str
    revision: int


def _check_name(name: str) -> str:
    if not 1 <= len(name.strip()) <= 200 or name != name.strip():
        raise InvalidField("name", name, "1 to 200 characters, no surrounding spaces")
    return name


def wallet_name_typed_data(
    ctx: RegistryCommands,
    sessions: sessionmaker[Session],
    *,
    wallet: str,
    name: str,
    now: datetime,
) -> dict[str, Any]:
    wallet = checksum("publicKey", wallet)
    with sessions() as session:
        current = db.get_wallet_name(session=session, address=wallet)
    return fwd.wallet_name_typed_data(
        chain_id=ctx.chain_id,
        registry=ctx.registry,
        wallet=wallet,
        name=_check_name(name),
        revision=current.revision if current is not None else 0,
        deadline_s=int(now.timestamp()) + DEFAULT_VALIDITY_S,
    )


def name_wallet(
    ctx: RegistryCommands,
    sessions: sessionmaker[Session],
    *,
    wallet: str,
    name: str,
    revision: int,
    deadline_s: int,
    signature: bytes,
    create: bool,
    now: datetime,
) -> NamedWallet:
    """Name (create) or rename an address, signed by it (or its operator) for the current
    revision, so an old signature cannot put back an old name."""
    wallet = checksum("publicKey", wallet)
    _check_name(name)
    signer = fwd.recover_wallet_name_signer(
        chain_id=ctx.chain_id,
        registry=ctx.registry,
        wallet=wallet,
        name=name,
        revision=revision,
        deadline_s=deadline_s,
        signature=signature,
    )
    if signer != wallet and not ctx.view.is_operator(wallet, signer):
        raise rules.WrongSigner(wallet, signer)
    now_s = int(now.timestamp())
    if deadline_s < now_s:
        raise rules.RequestExpired(deadline_s, now_s, 0)
    with sessions.begin() as session:
        current = db.get_wallet_name(session=session, address=wallet)
        if create:
            if current is not None:
                raise WalletAlreadyNamed(wallet)
            if revision != 0:
                raise StaleRevision(wallet, revision, 0)
            db.add_wallet_name(session=session, address=wallet, name=name, now=now)
            return NamedWallet(wallet, name, 1)
        if current is None:
            raise WalletNotNamed(wallet)
        if revision != current.revision or not db.rename_wallet(
            session=session, address=wallet, name=name, revision=revision, now=now
        ):
            raise StaleRevision(wallet, revision, current.revision)
        return NamedWallet(wallet, name, revision + 1)
