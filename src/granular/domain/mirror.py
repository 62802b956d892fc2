"""The registry mirror as pure state transitions (DESIGN.md §7).

The contract's events carry everything the mirror needs, so the mirror's state is a fold of
`apply(state, event)` over the events in chain order (block, log index). This module holds
the event values (what the event reader decodes), the mirror records, and the fold. It does
no I/O: the indexer loads the rows an event batch touches into a `MirrorState`, applies the
events, and writes back exactly the rows the state marks as changed.

`apply` checks, in this order, that the event fits the state it lands on, and raises
`MirrorInconsistent` naming the event and the rule when it does not (an event for an unknown
slice, a second issue of one id, a transition out of a final state): such an event means the
mirror missed or doubled events, and indexing must stop rather than serve wrong state.

- `CertificateIssued`: a certificate and its initial slice (same id), Active, owned by the
  event's owner; the owner's wallet gains one Active slice.
- `BatchIssued`: certificates first .. first + count - 1 get the batch id.
- `SliceSplit`: the parent becomes Removed; each child is Active with its quantity and owner,
  the parent's certificate and kind; wallet counts move with them.
- `SliceTransferred`: the slice's owner becomes `to`; counts move from `from` to `to`.
- `SliceClaimed`: both slices become Claimed; a claim record (id = production slice id) with
  the quantity, the production slice's owner as claimant and the consumption slice's owner.
- `SliceWithdrawn`: Active -> Withdrawn; the owner loses one Active slice.
- `WalletClosed`: the wallet is closed.
- `OperatorSet`: the (wallet, operator) approval is set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from granular.domain.slices import Kind, SliceState
from granular.errors import GranularError

# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventMeta:
    """Where an event sits on chain: its block and its position in it."""

    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int


@dataclass(frozen=True, slots=True)
class CertificateIssued:
    meta: EventMeta
    certificate_id: int
    owner: str
    kind: Kind
    quantity_wh: int
    data_hash: str  # 0x-prefixed lower-case hex


@dataclass(frozen=True, slots=True)
class BatchIssued:
    meta: EventMeta
    batch_id: str  # 0x-prefixed lower-case hex
    first_certificate_id: int
    count: int


@dataclass(frozen=True, slots=True)
class SliceSplit:
    meta: EventMeta
    parent_slice_id: int
    certificate_id: int
    child_slice_ids: tuple[int, ...]
    quantities_wh: tuple[int, ...]
    owners: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SliceTransferred:
    meta: EventMeta
    slice_id: int
    from_wallet: str
    to_wallet: str


@dataclass(frozen=True, slots=True)
class SliceClaimed:
    meta: EventMeta
    claim_id: int
    production_slice_id: int
    consumption_slice_id: int
    quantity_wh: int


@dataclass(frozen=True, slots=True)
class SliceWithdrawn:
    meta: EventMeta
    slice_id: int
    owner: str


@dataclass(frozen=True, slots=True)
class WalletClosed:
    meta: EventMeta
    wallet: str


@dataclass(frozen=True, slots=True)
class OperatorSet:
    meta: EventMeta
    wallet: str
    operator: str
    approved: bool


RegistryEvent = (
    CertificateIssued
    | BatchIssued
    | SliceSplit
    | SliceTransferred
    | SliceClaimed
    | SliceWithdrawn
    | WalletClosed
    | OperatorSet
)


def event_name(event: RegistryEvent) -> str:
    return type(event).__name__


def slice_ids_of(event: RegistryEvent) -> set[int]:
    """The slice (and certificate) ids an event reads or writes: what to load before applying."""
    match event:
        case CertificateIssued():
            return {event.certificate_id}
        case BatchIssued():
            return set(range(event.first_certificate_id, event.first_certificate_id + event.count))
        case SliceSplit():
            return {event.parent_slice_id, *event.child_slice_ids}
        case SliceTransferred() | SliceWithdrawn():
            return {event.slice_id}
        case SliceClaimed():
            return {event.production_slice_id, event.consumption_slice_id}
    return set()


def wallets_of(event: RegistryEvent) -> set[str]:
    """The wallets whose counters an event may change: what to load before applying."""
    match event:
        case CertificateIssued():
            return {event.owner}
        case SliceSplit():
            return set(event.owners)
        case SliceTransferred():
            return {event.from_wallet, event.to_wallet}
        case SliceWithdrawn():
            return {event.owner}
        case WalletClosed():
            return {event.wallet}
        case OperatorSet():
            return {event.wallet}
    return set()


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    certificate_id: int
    kind: Kind
    quantity_wh: int
    data_hash: str
    owner: str  # at issue
    tx_hash: str
    block_number: int
    batch_id: str | None = None


@dataclass(frozen=True, slots=True)
class SliceRecord:
    slice_id: int
    certificate_id: int
    owner: str
    kind: Kind
    state: SliceState
    quantity_wh: int
    parent_id: int | None
    block_number: int  # of the last event that changed it


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    claim_id: int
    production_slice_id: int
    consumption_slice_id: int
    production_certificate_id: int
    consumption_certificate_id: int
    quantity_wh: int
    claimant: str  # the production slice's owner
    consumer: str  # the consumption slice's owner
    tx_hash: str
    block_number: int


@dataclass(frozen=True, slots=True)
class WalletRecord:
    address: str
    closed: bool = False
    active_slices: int = 0


@dataclass
class MirrorState:
    """The rows an event batch touches, and which of them changed. Rows absent from the
    dicts are unknown (not yet on chain, or not loaded: the caller loads what
    `slice_ids_of` / `wallets_of` name)."""

    certificates: dict[int, CertificateRecord] = field(default_factory=dict)
    slices: dict[int, SliceRecord] = field(default_factory=dict)
    claims: dict[int, ClaimRecord] = field(default_factory=dict)
    wallets: dict[str, WalletRecord] = field(default_factory=dict)
    operators: dict[tuple[str, str], bool] = field(default_factory=dict)
    changed_certificates: set[int] = field(default_factory=set)
    changed_slices: set[int] = field(default_factory=set)
    changed_claims: set[int] = field(default_factory=set)
    changed_wallets: set[str] = field(default_factory=set)
    changed_operators: set[tuple[str, str]] = field(default_factory=set)


class MirrorInconsistent(GranularError):
    """An event does not fit the mirror's state: events were missed or doubled."""

    code = "mirror_inconsistent"

    def __init__(self, event: RegistryEvent, field_name: str, value: object, rule: str) -> None:
        meta = event.meta
        super().__init__(
            f"{event_name(event)} at block {meta.block_number} log {meta.log_index}: "
            f"{field_name}={value!r} breaks the rule: {rule}",
            {
                "event": event_name(event),
                "blockNumber": meta.block_number,
                "txHash": meta.tx_hash,
                "logIndex": meta.log_index,
                "field": field_name,
                "value": str(value),
                "rule": rule,
            },
        )


# --- the fold -----------------------------------------------------------------------------


def _wallet(state: MirrorState, address: str) -> WalletRecord:
    return state.wallets.get(address) or WalletRecord(address=address)


def _count(state: MirrorState, address: str, delta: int) -> None:
    wallet = state.wallets.get(address)
    if wallet is None:
        state.wallets[address] = WalletRecord(address, False, delta)
    else:  # built directly: dataclasses.replace is the fold's hot spot
        state.wallets[address] = WalletRecord(address, wallet.closed, wallet.active_slices + delta)
    state.changed_wallets.add(address)


def _moved(
    record: SliceRecord, block: int, *, state: SliceState | None = None, owner: str | None = None
) -> SliceRecord:
    return SliceRecord(
        record.slice_id,
        record.certificate_id,
        record.owner if owner is None else owner,
        record.kind,
        record.state if state is None else state,
        record.quantity_wh,
        record.parent_id,
        block,
    )


def _active(state: MirrorState, event: RegistryEvent, slice_id: int) -> SliceRecord:
    found = state.slices.get(slice_id)
    if found is None:
        raise MirrorInconsistent(event, "sliceId", slice_id, "the slice is known to the mirror")
    if found.state is not SliceState.ACTIVE:
        raise MirrorInconsistent(
            event, "sliceId", slice_id, f"the slice is Active (it is {found.state.name})"
        )
    return found


def _put_slice(state: MirrorState, record: SliceRecord) -> None:
    state.slices[record.slice_id] = record
    state.changed_slices.add(record.slice_id)


def apply(state: MirrorState, event: RegistryEvent) -> None:
    """Apply one event to `state` (see the module docstring for each event's effect)."""
    block = event.meta.block_number
    match event:
        case CertificateIssued():
            if event.certificate_id in state.slices:
                raise MirrorInconsistent(
                    event, "certificateId", event.certificate_id, "an id is issued once"
                )
            state.certificates[event.certificate_id] = CertificateRecord(
                certificate_id=event.certificate_id,
                kind=event.kind,
                quantity_wh=event.quantity_wh,
                data_hash=event.data_hash,
                owner=event.owner,
                tx_hash=event.meta.tx_hash,
                block_number=block,
            )
            state.changed_certificates.add(event.certificate_id)
            _put_slice(
                state,
                SliceRecord(
                    slice_id=event.certificate_id,
                    certificate_id=event.certificate_id,
                    owner=event.owner,
                    kind=event.kind,
                    state=SliceState.ACTIVE,
                    quantity_wh=event.quantity_wh,
                    parent_id=None,
                    block_number=block,
                ),
            )
            _count(state, event.owner, +1)
        case BatchIssued():
            for certificate_id in range(
                event.first_certificate_id, event.first_certificate_id + event.count
            ):
                certificate = state.certificates.get(certificate_id)
                if certificate is None:
                    raise MirrorInconsistent(
                        event, "certificateId", certificate_id, "a batch's certificates come first"
                    )
                state.certificates[certificate_id] = CertificateRecord(
                    certificate.certificate_id,
                    certificate.kind,
                    certificate.quantity_wh,
                    certificate.data_hash,
                    certificate.owner,
                    certificate.tx_hash,
                    certificate.block_number,
                    event.batch_id,
                )
                state.changed_certificates.add(certificate_id)
        case SliceSplit():
            parent = _active(state, event, event.parent_slice_id)
            if sum(event.quantities_wh) != parent.quantity_wh:
                raise MirrorInconsistent(
                    event,
                    "quantitiesWh",
                    sum(event.quantities_wh),
                    f"children sum to the parent's {parent.quantity_wh} Wh",
                )
            _put_slice(state, _moved(parent, block, state=SliceState.REMOVED))
            _count(state, parent.owner, -1)
            for child_id, quantity_wh, owner in zip(
                event.child_slice_ids, event.quantities_wh, event.owners, strict=True
            ):
                if child_id in state.slices:
                    raise MirrorInconsistent(event, "childSliceId", child_id, "an id is used once")
                _put_slice(
                    state,
                    SliceRecord(
                        slice_id=child_id,
                        certificate_id=parent.certificate_id,
                        owner=owner,
                        kind=parent.kind,
                        state=SliceState.ACTIVE,
                        quantity_wh=quantity_wh,
                        parent_id=parent.slice_id,
                        block_number=block,
                    ),
                )
                _count(state, owner, +1)
        case SliceTransferred():
            moved = _active(state, event, event.slice_id)
            if moved.owner != event.from_wallet:
                raise MirrorInconsistent(
                    event, "from", event.from_wallet, f"the slice's owner is {moved.owner}"
                )
            _put_slice(state, _moved(moved, block, owner=event.to_wallet))
            _count(state, event.from_wallet, -1)
            _count(state, event.to_wallet, +1)
        case SliceClaimed():
            production = _active(state, event, event.production_slice_id)
            consumption = _active(state, event, event.consumption_slice_id)
            for side in (production, consumption):
                _put_slice(state, _moved(side, block, state=SliceState.CLAIMED))
                _count(state, side.owner, -1)
            state.claims[event.claim_id] = ClaimRecord(
                claim_id=event.claim_id,
                production_slice_id=production.slice_id,
                consumption_slice_id=consumption.slice_id,
                production_certificate_id=production.certificate_id,
                consumption_certificate_id=consumption.certificate_id,
                quantity_wh=event.quantity_wh,
                claimant=production.owner,
                consumer=consumption.owner,
                tx_hash=event.meta.tx_hash,
                block_number=block,
            )
            state.changed_claims.add(event.claim_id)
        case SliceWithdrawn():
            withdrawn = _active(state, event, event.slice_id)
            _put_slice(state, _moved(withdrawn, block, state=SliceState.WITHDRAWN))
            _count(state, withdrawn.owner, -1)
        case WalletClosed():
            state.wallets[event.wallet] = replace(_wallet(state, event.wallet), closed=True)
            state.changed_wallets.add(event.wallet)
        case OperatorSet():
            key = (event.wallet, event.operator)
            state.operators[key] = event.approved
            state.changed_operators.add(key)
            # The wallet is known to the mirror from its first event on.
            state.wallets.setdefault(event.wallet, WalletRecord(address=event.wallet))
            state.changed_wallets.add(event.wallet)


# --- raw event storage form ---------------------------------------------------------------

_EVENT_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        CertificateIssued,
        BatchIssued,
        SliceSplit,
        SliceTransferred,
        SliceClaimed,
        SliceWithdrawn,
        WalletClosed,
        OperatorSet,
    )
}


def event_args(event: RegistryEvent) -> dict[str, object]:
    """An event's arguments as plain JSON values (the meta is stored in columns)."""
    args: dict[str, object] = {}
    for name in event.__dataclass_fields__:
        if name == "meta":
            continue
        value = getattr(event, name)
        args[name] = list(value) if isinstance(value, tuple) else value
        if isinstance(value, Kind):
            args[name] = int(value)
    return args


def event_from_args(name: str, meta: EventMeta, args: dict[str, object]) -> RegistryEvent:
    """The event `event_args` stored, rebuilt."""
    cls = _EVENT_TYPES[name]
    values: dict[str, object] = {}
    for key, value in args.items():
        if isinstance(value, list):
            value = tuple(value)
        if key == "kind" and isinstance(value, int):
            value = Kind(value)
        values[key] = value
    event: RegistryEvent = cls(meta=meta, **values)
    return event


# --- header fields the read API filters on ------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeaderFields:
    """What the list filters need from a certificate's header, copied onto its mirror row so
    a filter is an index lookup. Missing or malformed fields are None (a header is what the
    issuer wrote; the mirror does not judge it)."""

    asset_id: str | None = None
    fuel_code: str | None = None
    tech_code: str | None = None
    country: str | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    reservation_id: str | None = None


def _first(header: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if header.get(name) is not None:
            return header[name]
    return None


def _text(value: Any, limit: int) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str):
        text = str(value)
        return text[:limit] if text else None
    return None


def _instant(value: Any) -> datetime | None:
    """An ISO 8601 instant with a time zone, or whole Unix seconds; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment.astimezone(UTC) if moment.tzinfo is not None else None
    return None


def header_fields(header_json: str | None) -> HeaderFields:
    """The filterable fields of a header (ETT names first, then D-REC and snake_case ones):
    asset `assetID`/`deviceId`/`externalId`; `fuelCode`; `techCode`/`deviceTypeCode`;
    country `countryCode`/`country`, also inside `location` or `address` objects; period
    `periodStart`/`periodEnd`; reservation `buyerReservationId`/`reservationId`."""
    if header_json is None:
        return HeaderFields()
    try:
        header = json.loads(header_json)
    except ValueError:
        return HeaderFields()
    if not isinstance(header, dict):
        return HeaderFields()
    country = _first(header, "countryCode", "country")
    for place in ("location", "address"):
        nested = header.get(place)
        if country is None and isinstance(nested, dict):
            country = _first(nested, "countryCode", "country")
    return HeaderFields(
        asset_id=_text(_first(header, "assetID", "assetId", "deviceId", "externalId"), 200),
        fuel_code=_text(_first(header, "fuelCode", "fuel_code"), 32),
        tech_code=_text(_first(header, "techCode", "deviceTypeCode", "tech_code"), 32),
        country=_text(country, 8),
        period_start=_instant(_first(header, "periodStart", "period_start")),
        period_end=_instant(_first(header, "periodEnd", "period_end")),
        reservation_id=_text(
            _first(header, "buyerReservationId", "reservationId", "reservation_id"), 64
        ),
    )
