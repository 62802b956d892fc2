"""Registry commands checked before they are relayed (DESIGN.md §4 "Slices", §5).

A wallet owner (or its approved operator) signs an ERC-2771 ForwardRequest; the worker
relays it and pays. Before anything is stored, a command passes, in this order:

1. `check_relay`: the recovered signer is `request.from`; the deadline is not past (with a
   margin for the relay to be mined); the forwarder nonce is neither used on chain nor held
   by a request still in flight, and is the next one (requests execute in nonce order).
2. `check_commands`: the contract's own rules, by running the pure model of
   `domain/slices.py` on the state the read port reports (slices, wallets, operators), so a
   doomed command is refused with the name and values of the custom error the chain would
   revert with, and never mined.

Pure: values in, values out; the read port is a Protocol the services fill from the chain
today and from the mirror's tables later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from granular.domain import slices as model_entries
from granular.domain.slices import (
    ZERO_ADDRESS,
    Issuance,
    Kind,
    RegistryModel,
    Slice,
    SliceRuleViolation,
)
from granular.errors import Conflict, Forbidden, ValidationError

# Bounds on the gas a signed request forwards to the registry: below, even a transfer runs
# out; above, one request could hold most of a block.
MIN_REQUEST_GAS = 50_000
MAX_REQUEST_GAS = 12_000_000
DEFAULT_REQUEST_GAS = 300_000
# The gas typed-data proposes for a bulk command, from the model's run of it (measured by
# `make bench` gas: a whole claim 15.4k, a whole transfer 9.5-11.3k, each slice a split
# creates about 28k): per call, per entry and per new slice, with a quarter of headroom.
BULK_CALL_GAS = 60_000
BULK_ENTRY_GAS = 20_000
NEW_SLICE_GAS = 35_000
# A request whose deadline is closer than this is refused: it could expire before it is mined.
DEFAULT_DEADLINE_MARGIN_S = 60
MAX_BATCH_ENTRIES = 100
# The relay transaction's gas limit is set, not estimated: an estimate runs on the chain's
# state before the requests ahead of it (same signer, lower nonces) are mined, and would see
# their nonces as unused. Per request: the forwarder's signature check, nonce and event.
TX_BASE_GAS = 21_000
CALLDATA_GAS_PER_BYTE = 16
FORWARDER_OVERHEAD_GAS = 60_000
MAX_RELAY_GAS = 15_000_000


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """The EIP-712 ForwardRequest the wallet owner signs (OpenZeppelin ERC2771Forwarder)."""

    from_address: str
    to: str  # the registry
    value_wei: int
    gas: int
    nonce: int
    deadline_s: int  # unix seconds; the forwarder executes while block.timestamp <= deadline
    data: bytes  # registry calldata


# ------------------------------------------------------------------ commands


@dataclass(frozen=True, slots=True)
class Transfer:
    slice_id: int
    to: str
    quantity_wh: int | None = None  # None: the whole slice (transfer); else transferPart


@dataclass(frozen=True, slots=True)
class Claim:
    production_slice_id: int
    consumption_slice_id: int
    quantity_wh: int | None = None  # None: claim (equal wholes); else claimPart


@dataclass(frozen=True, slots=True)
class TransferBatch:
    """transferBatch: every entry in order, all or nothing, in one signed request."""

    entries: tuple[Transfer, ...]


@dataclass(frozen=True, slots=True)
class ClaimBatch:
    """claimBatch: every entry in order, all or nothing, in one signed request. An entry's
    slice id 0 names the remainder the previous entry's split of that side left."""

    entries: tuple[Claim, ...]


@dataclass(frozen=True, slots=True)
class CloseWallet:
    pass


@dataclass(frozen=True, slots=True)
class SetOperator:
    operator: str
    approved: bool


@dataclass(frozen=True, slots=True)
class Withdraw:
    slice_id: int


@dataclass(frozen=True, slots=True)
class Issue:
    owner: str
    kind: Kind
    quantity_wh: int
    data_hash: bytes
    batch_id: bytes


Command = (
    Transfer | Claim | TransferBatch | ClaimBatch | CloseWallet | SetOperator | Withdraw | Issue
)


# ------------------------------------------------------------------ errors


class SignatureUnreadable(ValidationError):
    code = "signature_invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"signature: not a valid 65-byte ECDSA signature ({reason})",
            {"field": "signature", "rule": "65-byte ECDSA signature"},
        )


class WrongSigner(Forbidden):
    """The signature was not made by `from` over exactly this request."""

    code = "wrong_signer"

    def __init__(self, from_address: str, recovered: str) -> None:
        super().__init__(
            f"signature: recovers {recovered}, not from={from_address}; the wallet owner (or "
            "its operator) must sign exactly the request served by typed-data",
            {"field": "signature", "from": from_address, "recovered": recovered},
        )


class RequestExpired(ValidationError):
    code = "request_expired"

    def __init__(self, deadline_s: int, chain_time_s: int, margin_s: int) -> None:
        super().__init__(
            f"deadline={deadline_s} is past or within {margin_s} s of the chain's time "
            f"{chain_time_s}; sign a new request",
            {
                "field": "deadline",
                "value": deadline_s,
                "chainTime": chain_time_s,
                "marginS": margin_s,
            },
        )


class NonceUsed(Conflict):
    """A replay: the nonce was consumed on chain, or a relayed request in flight holds it."""

    code = "nonce_used"

    def __init__(self, from_address: str, nonce: int, where: str) -> None:
        super().__init__(
            f"nonce={nonce} of {from_address} is already used ({where}); a signed request "
            "is relayed once",
            {"field": "nonce", "value": nonce, "from": from_address, "usedBy": where},
        )


class NonceOutOfOrder(Conflict):
    code = "nonce_out_of_order"

    def __init__(self, from_address: str, nonce: int, expected: int) -> None:
        super().__init__(
            f"nonce={nonce} of {from_address}: the next nonce is {expected}",
            {"field": "nonce", "value": nonce, "expected": expected, "from": from_address},
        )


class GasOutOfRange(ValidationError):
    code = "request_gas_out_of_range"

    def __init__(self, gas: int) -> None:
        super().__init__(
            f"gas={gas} is outside [{MIN_REQUEST_GAS}, {MAX_REQUEST_GAS}]",
            {"field": "gas", "value": gas, "min": MIN_REQUEST_GAS, "max": MAX_REQUEST_GAS},
        )


class CommandRefused(ValidationError):
    """The registry would revert: `rule` is its custom error, `values` its arguments."""

    code = "registry_rule_violation"

    def __init__(self, index: int, violation: SliceRuleViolation) -> None:
        super().__init__(
            f"command {index}: {violation} ({violation.error})",
            {
                "rule": violation.error,
                "values": [_plain(v) for v in violation.values],
                "command": index,
            },
        )
        self.rule = violation.error


def _plain(value: object) -> object:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, int | str | bool):
        return value
    return str(value)


# ------------------------------------------------------------------ the read port


class RegistryView(Protocol):
    """What a command is checked against: the chain's views today, the mirror later.
    Addresses are EIP-55 checksummed in and out."""

    def slice(self, slice_id: int) -> Slice | None: ...

    def wallet(self, wallet: str) -> tuple[bool, int]:
        """(closed, number of Active slices)."""
        ...

    def is_operator(self, wallet: str, operator: str) -> bool: ...


class RelayView(Protocol):
    """The forwarder's state a signed request is checked against (always the chain)."""

    def forwarder_nonce(self, account: str) -> int: ...

    def chain_time_s(self) -> int: ...

    def forwarded(self, tx_hash: str) -> list[bool]:
        """For a mined relay transaction: whether each request in it ran."""
        ...


# ------------------------------------------------------------------ checks


def check_gas(gas: int) -> None:
    if not MIN_REQUEST_GAS <= gas <= MAX_REQUEST_GAS:
        raise GasOutOfRange(gas)


class RelayTooLarge(ValidationError):
    code = "relay_gas_too_large"

    def __init__(self, gas: int) -> None:
        super().__init__(
            f"the signed requests need a {gas} gas transaction; at most {MAX_RELAY_GAS}: "
            "send fewer at once or sign a smaller gas",
            {"field": "gas", "value": gas, "max": MAX_RELAY_GAS},
        )


def relay_gas_limit(request_gas: Sequence[int], calldata_bytes: int) -> int:
    """Gas limit of the transaction relaying requests that forward `request_gas` each:
    enough for each inner call and the forwarder's own work, never estimated."""
    limit = (
        TX_BASE_GAS
        + CALLDATA_GAS_PER_BYTE * calldata_bytes
        + sum(gas + FORWARDER_OVERHEAD_GAS for gas in request_gas)
    )
    if limit > MAX_RELAY_GAS:
        raise RelayTooLarge(limit)
    return limit


def check_relay(
    requests: Sequence[ForwardRequest],
    *,
    recovered: Sequence[str],
    chain_time_s: int,
    chain_nonce: int,
    pending_nonces: Iterable[int],
    margin_s: int = DEFAULT_DEADLINE_MARGIN_S,
) -> None:
    """Signed requests of one signer, relayed together in this order: each is signed by its
    `from`, unexpired, and their nonces are the next ones, consecutive, none used."""
    pending = set(pending_nonces)
    expected = max([chain_nonce, *(n + 1 for n in pending)])
    for request, signer in zip(requests, recovered, strict=True):
        check_gas(request.gas)
        if signer != request.from_address:
            raise WrongSigner(request.from_address, signer)
        if request.deadline_s < chain_time_s + margin_s:
            raise RequestExpired(request.deadline_s, chain_time_s, margin_s)
        if request.nonce < chain_nonce:
            raise NonceUsed(request.from_address, request.nonce, "on chain")
        if request.nonce in pending:
            raise NonceUsed(request.from_address, request.nonce, "a request in flight")
        if request.nonce != expected:
            raise NonceOutOfOrder(request.from_address, request.nonce, expected)
        expected += 1


def _slice_ids(command: Command) -> list[int]:
    if isinstance(command, Transfer | Withdraw):
        return [command.slice_id]
    if isinstance(command, Claim):
        return [command.production_slice_id, command.consumption_slice_id]
    if isinstance(command, TransferBatch | ClaimBatch):
        return [i for entry in command.entries for i in _slice_ids(entry) if i != 0]
    return []


def _addresses(command: Command) -> list[str]:
    if isinstance(command, Transfer):
        return [command.to]
    if isinstance(command, TransferBatch):
        return [entry.to for entry in command.entries]
    if isinstance(command, Issue):
        return [command.owner]
    return []


def is_bulk(command: Command) -> bool:
    return isinstance(command, TransferBatch | ClaimBatch)


def proposed_gas(view: RegistryView, caller: str, command: Command) -> int:
    """The gas to sign for one command (see `checked_gas`)."""
    return checked_gas(view, caller, [command])[0]


def checked_gas(view: RegistryView, caller: str, commands: Sequence[Command]) -> list[int]:
    """`check_commands`, and from the same run on the model the gas to sign per command:
    DEFAULT_REQUEST_GAS for a single command; for a bulk one, from its entries and the
    slices its splits create."""
    return [
        _gas(command, created)
        for command, created in zip(commands, _checked(view, caller, commands)[1], strict=True)
    ]


def _gas(command: Command, created_slices: int) -> int:
    if not isinstance(command, TransferBatch | ClaimBatch):
        return DEFAULT_REQUEST_GAS
    gas = BULK_CALL_GAS + BULK_ENTRY_GAS * len(command.entries) + NEW_SLICE_GAS * created_slices
    return max(gas, DEFAULT_REQUEST_GAS)


def model_for(view: RegistryView, caller: str, commands: Sequence[Command]) -> RegistryModel:
    """The part of the registry `commands` touch, read through the port, as a model."""
    model = RegistryModel()
    slices = {
        slice_id: found
        for command in commands
        for slice_id in _slice_ids(command)
        if (found := view.slice(slice_id)) is not None
    }
    wallets = {caller, *(s.owner for s in slices.values())}
    wallets.update(a for command in commands for a in _addresses(command) if a != ZERO_ADDRESS)
    for wallet in sorted(wallets):
        closed, active = view.wallet(wallet)
        if closed:
            model.closed.add(wallet)
        model.active_count[wallet] = active
    for owner in {s.owner for s in slices.values()}:
        if owner != caller and view.is_operator(owner, caller):
            model.operators.add((owner, caller))
    model.slices.update(slices)
    model.next_id = max(slices, default=0) + 1
    return model


def check_commands(
    view: RegistryView, caller: str, commands: Sequence[Command], *, issuer: bool = False
) -> RegistryModel:
    """Run `commands` in order as `caller` on the model of what the view reports; the first
    that the registry would revert raises CommandRefused. Returns the model after them."""
    return _checked(view, caller, commands, issuer=issuer)[0]


def _checked(
    view: RegistryView, caller: str, commands: Sequence[Command], *, issuer: bool = False
) -> tuple[RegistryModel, list[int]]:
    """check_commands, also returning how many slices each command created on the model."""
    model = model_for(view, caller, commands)
    if issuer:
        model.issuers.add(caller)
    created: list[int] = []
    for index, command in enumerate(commands):
        first_new = model.next_id
        try:
            _apply(model, caller, command)
        except SliceRuleViolation as violation:
            raise CommandRefused(index, violation) from None
        created.append(model.next_id - first_new)
    return model, created


def _apply(model: RegistryModel, caller: str, command: Command) -> None:
    if isinstance(command, Transfer):
        if command.quantity_wh is None:
            model.transfer(caller, command.slice_id, command.to)
        else:
            model.transfer_part(caller, command.slice_id, command.quantity_wh, command.to)
    elif isinstance(command, Claim):
        if command.quantity_wh is None:
            model.claim(caller, command.production_slice_id, command.consumption_slice_id)
        else:
            model.claim_part(
                caller,
                command.production_slice_id,
                command.consumption_slice_id,
                command.quantity_wh,
            )
    elif isinstance(command, TransferBatch):
        model.transfer_batch(
            caller,
            [model_entries.Transfer(e.slice_id, e.quantity_wh or 0, e.to) for e in command.entries],
        )
    elif isinstance(command, ClaimBatch):
        model.claim_batch(
            caller,
            [
                model_entries.Claim(
                    e.production_slice_id, e.consumption_slice_id, e.quantity_wh or 0
                )
                for e in command.entries
            ],
        )
    elif isinstance(command, CloseWallet):
        model.close_wallet(caller)
    elif isinstance(command, SetOperator):
        model.set_operator(caller, command.operator, command.approved)
    elif isinstance(command, Withdraw):
        model.withdraw(caller, command.slice_id)
    else:
        model.issue_batch(
            caller,
            command.batch_id,
            [Issuance(command.owner, command.kind, command.quantity_wh, command.data_hash)],
        )
