"""The slice and wallet rules of the registry, as a pure model (DESIGN.md §4 "Slices").

The contract enforces these rules on chain; this model enforces the same rules in the same
order, so a command can be validated before it is sent, and tests can compare the chain
with the model step by step. Each violation carries the name and values of the contract's
custom error it corresponds to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import partial
from typing import Any

from granular.errors import ValidationError

ZERO_ADDRESS = "0x" + "0" * 40
MAX_ID = (1 << 44) - 1  # the 44 bits of the packed certificate id
MAX_QUANTITY_WH = (1 << 48) - 1  # the 48 bits of the packed quantity
ISSUER_ROLE = "ISSUER_ROLE"


class Kind(IntEnum):
    PRODUCTION = 0
    CONSUMPTION = 1


class SliceState(IntEnum):
    NONE = 0
    ACTIVE = 1
    REMOVED = 2
    CLAIMED = 3
    WITHDRAWN = 4
    EXPIRED = 5


@dataclass(frozen=True, slots=True)
class Slice:
    slice_id: int
    owner: str
    kind: Kind
    state: SliceState
    quantity_wh: int
    certificate_id: int


@dataclass(frozen=True, slots=True)
class Issuance:
    owner: str
    kind: Kind
    quantity_wh: int
    data_hash: bytes


@dataclass(frozen=True, slots=True)
class Part:
    quantity_wh: int
    to: str = ZERO_ADDRESS  # the zero address keeps the part with the slice's owner


@dataclass(frozen=True, slots=True)
class Claim:
    """One claim_batch entry: 0 Wh claims both slices whole (and equal), else that much.
    A slice id of 0 names the remainder the previous entry's split of that side left with
    its owner. Fields in the contract struct's order."""

    production_id: int
    consumption_id: int
    quantity_wh: int = 0


@dataclass(frozen=True, slots=True)
class Transfer:
    """One transfer_batch entry: 0 Wh sends the whole slice, else that much of it.
    Fields in the contract struct's order."""

    slice_id: int
    quantity_wh: int
    to: str


class SliceRuleViolation(ValidationError):
    """A slice or wallet rule was broken; `error` and `values` name the contract's error."""

    code = "slice_rule_violation"

    def __init__(self, error: str, values: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.error = error
        self.values = values


def _violation(error: str, *values: Any, message: str) -> SliceRuleViolation:
    return SliceRuleViolation(error, values, message)


@dataclass
class RegistryModel:
    """The registry's state and commands. Addresses are compared as given (use checksums)."""

    issuers: set[str] = field(default_factory=set)
    slices: dict[int, Slice] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    active_count: dict[str, int] = field(default_factory=dict)
    operators: set[tuple[str, str]] = field(default_factory=set)
    batches: set[bytes] = field(default_factory=set)
    next_id: int = 1

    # ------------------------------------------------------------ queries

    def certificate_total_wh(self, certificate_id: int) -> int:
        """Sum of the certificate's non-Removed slices: always its quantity."""
        return sum(
            s.quantity_wh
            for s in self.slices.values()
            if s.certificate_id == certificate_id and s.state != SliceState.REMOVED
        )

    def certificate_ids(self) -> list[int]:
        return sorted({s.certificate_id for s in self.slices.values()})

    def is_operator(self, wallet: str, operator: str) -> bool:
        return (wallet, operator) in self.operators

    # ------------------------------------------------------------ commands

    def issue_batch(self, caller: str, batch_id: bytes, items: list[Issuance]) -> int:
        if caller not in self.issuers:
            raise _violation(
                "AccessControlUnauthorizedAccount",
                caller,
                ISSUER_ROLE,
                message=f"{caller} lacks {ISSUER_ROLE}",
            )
        if not items:
            raise _violation(
                "CertificateRegistryEmptyBatch", batch_id, message="a batch needs items"
            )
        if batch_id in self.batches:
            raise _violation(
                "CertificateRegistryBatchAlreadyIssued",
                batch_id,
                message=f"batch 0x{batch_id.hex()} was already issued",
            )
        first = self._allocate(len(items))
        created: list[Slice] = []
        for offset, item in enumerate(items):
            slice_id = first + offset
            if item.quantity_wh <= 0:
                raise _violation(
                    "CertificateRegistryZeroQuantity",
                    slice_id,
                    message=f"certificate {slice_id}: quantity_wh must be > 0",
                )
            if item.quantity_wh > MAX_QUANTITY_WH:
                raise _violation(
                    "CertificateRegistryQuantityTooLarge",
                    slice_id,
                    item.quantity_wh,
                    MAX_QUANTITY_WH,
                    message=(
                        f"certificate {slice_id}: {item.quantity_wh} Wh exceeds the "
                        f"{MAX_QUANTITY_WH} Wh a slice can hold"
                    ),
                )
            self._require_open_wallet(item.owner)
            created.append(
                Slice(
                    slice_id, item.owner, item.kind, SliceState.ACTIVE, item.quantity_wh, slice_id
                )
            )
        # Only a batch that passed every check changes state, like a reverted transaction.
        self.batches.add(batch_id)
        self.next_id = first + len(items)
        for new in created:
            self._put(new)
        return first

    def split(self, caller: str, slice_id: int, parts: list[Part]) -> list[int]:
        parent = self._active(slice_id)
        self._require_permission(caller, parent.owner)
        return self._split(parent, parts)

    def transfer(self, caller: str, slice_id: int, to: str) -> None:
        current = self._active(slice_id)
        self._require_permission(caller, current.owner)
        self._transfer(current, to)

    def transfer_part(self, caller: str, slice_id: int, quantity_wh: int, to: str) -> int:
        current = self._active(slice_id)
        self._require_permission(caller, current.owner)
        if to == ZERO_ADDRESS:
            raise _violation(
                "CertificateRegistryInvalidAddress", to, message="to: the zero address"
            )
        if quantity_wh == 0:
            raise _violation(
                "CertificateRegistryZeroQuantity", slice_id, message="quantity_wh must be > 0"
            )
        self._require_quantity(current, quantity_wh)
        if quantity_wh == current.quantity_wh:
            self._transfer(current, to)
            return slice_id
        return self._split(current, [Part(quantity_wh, to)])[0]

    def claim(self, caller: str, production_id: int, consumption_id: int) -> int:
        production, consumption = self._claimable(caller, production_id, consumption_id)
        if production.quantity_wh != consumption.quantity_wh:
            raise _violation(
                "CertificateRegistryQuantityMismatch",
                production_id,
                production.quantity_wh,
                consumption_id,
                consumption.quantity_wh,
                message=(
                    f"production slice {production_id} holds {production.quantity_wh} Wh, "
                    f"consumption slice {consumption_id} holds {consumption.quantity_wh} Wh; "
                    "a claim needs equal quantities"
                ),
            )
        return self._claim(production, consumption)

    def claim_part(
        self, caller: str, production_id: int, consumption_id: int, quantity_wh: int
    ) -> int:
        claimed, _ = self._claim_part(caller, production_id, consumption_id, quantity_wh)
        return claimed.slice_id

    def claim_batch(self, caller: str, claims: Sequence[Claim]) -> list[int]:
        """Each entry as `claim` (0 Wh) or `claim_part` would, in order; all or nothing.
        The claim ids, one per entry."""
        remainders = {Kind.PRODUCTION: 0, Kind.CONSUMPTION: 0}
        entries = [
            partial(self._claim_entry, caller, index, entry, remainders)
            for index, entry in enumerate(claims)
        ]
        return self._all_or_nothing(entries)

    def transfer_batch(self, caller: str, transfers: Sequence[Transfer]) -> list[int]:
        """Each entry as `transfer` (0 Wh) or `transfer_part` would, in order; all or nothing.
        The slice now held by each entry's `to`."""
        return self._all_or_nothing([partial(self._transfer_entry, caller, e) for e in transfers])

    def withdraw(self, caller: str, slice_id: int) -> None:
        if caller not in self.issuers:
            raise _violation(
                "AccessControlUnauthorizedAccount",
                caller,
                ISSUER_ROLE,
                message=f"{caller} lacks {ISSUER_ROLE}",
            )
        current = self._active(slice_id)
        self._put(_with_state(current, SliceState.WITHDRAWN))

    def close_wallet(self, caller: str) -> None:
        if caller in self.closed:
            raise _violation(
                "CertificateRegistryWalletClosed", caller, message=f"wallet {caller} is closed"
            )
        active = self.active_count.get(caller, 0)
        if active:
            raise _violation(
                "CertificateRegistryWalletHasActiveSlices",
                caller,
                active,
                message=f"wallet {caller} still holds {active} Active slices",
            )
        self.closed.add(caller)

    def set_operator(self, caller: str, operator: str, approved: bool) -> None:
        if operator in (ZERO_ADDRESS, caller):
            raise _violation(
                "CertificateRegistryInvalidOperator",
                caller,
                operator,
                message=f"operator: {operator} cannot operate wallet {caller}",
            )
        if approved:
            self.operators.add((caller, operator))
        else:
            self.operators.discard((caller, operator))

    # ------------------------------------------------------------ internals

    def _all_or_nothing(self, entries: Sequence[Callable[[], int]]) -> list[int]:
        """Run a bulk command's entries; the first violation undoes them all, as a revert."""
        if not entries:
            raise _violation("CertificateRegistryEmptyList", message="a bulk command needs entries")
        saved = (
            dict(self.slices),
            set(self.closed),
            dict(self.active_count),
            set(self.operators),
            set(self.batches),
            self.next_id,
        )
        try:
            return [entry() for entry in entries]
        except SliceRuleViolation:
            slices, closed, active, operators, batches, next_id = saved
            self.slices, self.closed, self.active_count = slices, closed, active
            self.operators, self.batches, self.next_id = operators, batches, next_id
            raise

    def _claim_entry(
        self, caller: str, index: int, entry: Claim, remainders: dict[Kind, int]
    ) -> int:
        """One entry; `remainders` holds, per side, what the previous entry's split left with
        the owner (0: not split), and is updated for the next entry."""
        production_id = _named(index, entry.production_id, remainders, Kind.PRODUCTION)
        consumption_id = _named(index, entry.consumption_id, remainders, Kind.CONSUMPTION)
        if entry.quantity_wh == 0:
            remainders.update({Kind.PRODUCTION: 0, Kind.CONSUMPTION: 0})
            return self.claim(caller, production_id, consumption_id)
        production, consumption = self._claim_part(
            caller, production_id, consumption_id, entry.quantity_wh
        )
        # A split's children are [the part, the remainder]: the remainder is the next id.
        for kind, named, claimed in (
            (Kind.PRODUCTION, production_id, production.slice_id),
            (Kind.CONSUMPTION, consumption_id, consumption.slice_id),
        ):
            remainders[kind] = 0 if claimed == named else claimed + 1
        return production.slice_id

    def _claim_part(
        self, caller: str, production_id: int, consumption_id: int, quantity_wh: int
    ) -> tuple[Slice, Slice]:
        """claim_part; returns the two slices claimed (a split side: its first child)."""
        production, consumption = self._claimable(caller, production_id, consumption_id)
        if quantity_wh == 0:
            raise _violation(
                "CertificateRegistryZeroQuantity",
                production_id,
                message="quantity_wh must be > 0",
            )
        # Check both sides before splitting either: a revert on chain undoes the first split.
        self._require_quantity(production, quantity_wh)
        self._require_quantity(consumption, quantity_wh)
        production = self._carve(production, quantity_wh)
        consumption = self._carve(consumption, quantity_wh)
        self._claim(production, consumption)
        return production, consumption

    def _transfer_entry(self, caller: str, entry: Transfer) -> int:
        if entry.quantity_wh == 0:
            self.transfer(caller, entry.slice_id, entry.to)
            return entry.slice_id
        return self.transfer_part(caller, entry.slice_id, entry.quantity_wh, entry.to)

    def _allocate(self, count: int) -> int:
        last = self.next_id + count - 1
        if last > MAX_ID:
            raise _violation(
                "CertificateRegistryIdSpaceExhausted",
                last,
                MAX_ID,
                message=f"id {last} exceeds the registry's {MAX_ID}",
            )
        return self.next_id

    def _active(self, slice_id: int) -> Slice:
        found = self.slices.get(slice_id)
        if found is None:
            raise _violation(
                "CertificateRegistryUnknownSlice", slice_id, message=f"no slice {slice_id}"
            )
        if found.state != SliceState.ACTIVE:
            raise _violation(
                "CertificateRegistrySliceNotActive",
                slice_id,
                int(found.state),
                message=f"slice {slice_id} is {found.state.name}, not ACTIVE",
            )
        return found

    def _require_permission(self, caller: str, wallet: str) -> None:
        if caller != wallet and (wallet, caller) not in self.operators:
            raise _violation(
                "CertificateRegistryUnauthorized",
                caller,
                wallet,
                message=f"{caller} may not act on wallet {wallet}",
            )

    def _require_open_wallet(self, wallet: str) -> None:
        if wallet == ZERO_ADDRESS:
            raise _violation(
                "CertificateRegistryInvalidAddress", wallet, message="wallet: the zero address"
            )
        if wallet in self.closed:
            raise _violation(
                "CertificateRegistryWalletClosed", wallet, message=f"wallet {wallet} is closed"
            )

    def _require_quantity(self, current: Slice, quantity_wh: int) -> None:
        if quantity_wh > current.quantity_wh:
            raise _violation(
                "CertificateRegistryInsufficientQuantity",
                current.slice_id,
                current.quantity_wh,
                quantity_wh,
                message=(
                    f"slice {current.slice_id} holds {current.quantity_wh} Wh; "
                    f"{quantity_wh} Wh requested"
                ),
            )

    def _split(self, parent: Slice, parts: list[Part]) -> list[int]:
        if not parts:
            raise _violation(
                "CertificateRegistryEmptySplit", parent.slice_id, message="a split needs parts"
            )
        if any(part.quantity_wh <= 0 for part in parts):
            raise _violation(
                "CertificateRegistryZeroQuantity",
                parent.slice_id,
                message=f"slice {parent.slice_id}: every part needs quantity_wh > 0",
            )
        self._require_quantity(parent, sum(part.quantity_wh for part in parts))
        remainder = parent.quantity_wh - sum(part.quantity_wh for part in parts)
        children = [
            (part.quantity_wh, part.to if part.to != ZERO_ADDRESS else parent.owner)
            for part in parts
        ]
        if remainder:
            children.append((remainder, parent.owner))
        first = self._allocate(len(children))
        for _, to in children:
            if to != parent.owner:
                self._require_open_wallet(to)
        self.next_id = first + len(children)
        self._put(_with_state(parent, SliceState.REMOVED))
        for offset, (quantity_wh, to) in enumerate(children):
            self._put(
                Slice(
                    first + offset,
                    to,
                    parent.kind,
                    SliceState.ACTIVE,
                    quantity_wh,
                    parent.certificate_id,
                )
            )
        return list(range(first, first + len(children)))

    def _transfer(self, current: Slice, to: str) -> None:
        self._require_open_wallet(to)
        self._put(
            Slice(
                current.slice_id,
                to,
                current.kind,
                current.state,
                current.quantity_wh,
                current.certificate_id,
            )
        )

    def _claimable(
        self, caller: str, production_id: int, consumption_id: int
    ) -> tuple[Slice, Slice]:
        production = self._active(production_id)
        consumption = self._active(consumption_id)
        if production.kind != Kind.PRODUCTION or consumption.kind != Kind.CONSUMPTION:
            raise _violation(
                "CertificateRegistryKindMismatch",
                production_id,
                consumption_id,
                message=(
                    f"a claim pairs a PRODUCTION slice with a CONSUMPTION slice; slice "
                    f"{production_id} is {production.kind.name}, slice {consumption_id} is "
                    f"{consumption.kind.name}"
                ),
            )
        self._require_permission(caller, production.owner)
        if consumption.owner != production.owner:
            self._require_permission(caller, consumption.owner)
        return production, consumption

    def _carve(self, current: Slice, quantity_wh: int) -> Slice:
        if quantity_wh == current.quantity_wh:
            return current
        child = self._split(current, [Part(quantity_wh)])[0]
        return self.slices[child]

    def _claim(self, production: Slice, consumption: Slice) -> int:
        self._put(_with_state(production, SliceState.CLAIMED))
        self._put(_with_state(consumption, SliceState.CLAIMED))
        return production.slice_id

    def _put(self, new: Slice) -> None:
        """Store a slice, keeping each wallet's count of Active slices."""
        old = self.slices.get(new.slice_id)
        if old is not None and old.state == SliceState.ACTIVE:
            self.active_count[old.owner] -= 1
        if new.state == SliceState.ACTIVE:
            self.active_count[new.owner] = self.active_count.get(new.owner, 0) + 1
        self.slices[new.slice_id] = new


def _named(index: int, slice_id: int, remainders: dict[Kind, int], kind: Kind) -> int:
    """The slice a claim_batch entry names: itself, or for 0 the previous entry's remainder."""
    if slice_id != 0:
        return slice_id
    if remainders[kind] == 0:
        raise _violation(
            "CertificateRegistryNoRemainder",
            index,
            int(kind),
            message=(
                f"entry {index} names slice 0 on the {kind.name} side, but the previous entry "
                "left no remainder there"
            ),
        )
    return remainders[kind]


def _with_state(current: Slice, state: SliceState) -> Slice:
    return Slice(
        current.slice_id,
        current.owner,
        current.kind,
        state,
        current.quantity_wh,
        current.certificate_id,
    )
