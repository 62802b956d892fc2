"""Reservations: create, change, end and show them (DESIGN.md §4 "Windows and reservations").

The rules are `granular.domain.reservations`; this module fetches what they need (the
bookings of the devices concerned, `now`), calls them, and stores the result.

- Status: `ended` once DELETE recorded `ended_at`; `completed` once the issuance service
  recorded `completed_at` (target met without authority to exceed) or `end` has passed;
  `live` otherwise. Only a live reservation can change or be ended.
- A device's stint in a reservation ends at the earliest of its own release (removed by
  PATCH), the reservation's `ended_at`, `completed_at` and `end`. Another reservation may
  take the device 12 h after that (the domain's cool-down), for a period that does not
  overlap the one this reservation covered.
- Volumes: `requested_wh` is the energy known for the reservation's devices within the
  period each one covered: every interval inside it, and the in-period share of each one
  crossing its start or end (cut at those instants and shared in proportion to time, by
  largest remainder, as `domain.windows.split_interval` shares one between windows).
  `issued_wh`, `failed_wh` and `leftover_wh` are columns of the reservation that the
  issuance service will write; it is not built yet, so they read 0.
- Access: only a buyer creates, changes or ends a reservation, and only its own
  organization's; issuers and viewers read every reservation; another organization's buyer
  is told a reservation does not exist (404), never that it belongs to someone else.
- Concurrency: every booking transaction starts by locking the devices (and the
  reservation) it touches (see `granular.adapters.db.reservations`), so two reservations
  racing for one device never both win: the second waits, then sees the first's booking.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.accounts import Principal
from granular.adapters.db.devices import DeviceFilter
from granular.adapters.db.readings import SpanEnergy, energy_between
from granular.adapters.db.reservations import (
    BookingRecord,
    LockedDevice,
    NewReservationRow,
    StoredReservation,
    add_devices,
    add_reservation,
    booking_records,
    end_reservation,
    get_reservation,
    list_reservations,
    lock_devices,
    lock_reservation,
    release_devices,
    reservable_clause,
    update_terms,
)
from granular.domain.addresses import address_problem, to_checksum
from granular.domain.devices import DeviceKind
from granular.domain.gas import Tier
from granular.domain.reservations import (
    RELEASE_COOLDOWN,
    DeviceBooking,
    ReservationEnded,
    ReservationStatus,
    ReservationTerms,
    Stint,
    check_device_kinds,
    closed_at,
    covered_until,
    reservation_status,
    stint_release,
    validate_reservation,
    validate_reservation_update,
)
from granular.domain.units import RuleViolation, to_utc
from granular.domain.windows import Frequency, share_in_span
from granular.errors import NotFound
from granular.services.accounts import Role, require_role

READERS = (Role.BUYER, Role.ISSUER, Role.VIEWER)


# --- errors -------------------------------------------------------------------------------


class InvalidWallet(RuleViolation, ValueError):
    """Also a ValueError, so a pydantic validator reports it against the `wallet` field."""

    code = "invalid_wallet"

    def __init__(self, value: str, reason: str) -> None:
        super().__init__(
            f"wallet: {value!r} is not an EVM address ({reason})",
            {"field": "wallet", "value": value, "reason": reason},
        )
        self.value = value
        self.reason = reason


class UnknownDevices(RuleViolation):
    code = "unknown_device"

    def __init__(self, field: str, device_ids: Iterable[int]) -> None:
        ids = sorted(device_ids)
        super().__init__(
            f"{field}: no device with id {', '.join(map(str, ids))}",
            {"field": field, "value": ids},
        )
        self.device_ids = ids


class DeviceNotInReservation(RuleViolation):
    code = "device_not_in_reservation"

    def __init__(
        self, reservation_id: int, device_ids: Iterable[int], field: str = "removeDevices"
    ) -> None:
        ids = sorted(device_ids)
        super().__init__(
            f"{field}: reservation {reservation_id} does not hold device "
            f"{', '.join(map(str, ids))}",
            {"field": field, "value": ids, "reservation_id": str(reservation_id)},
        )
        self.device_ids = ids


class DeviceAddedAndRemoved(RuleViolation):
    code = "device_added_and_removed"

    def __init__(self, device_ids: Iterable[int], fields: tuple[str, str]) -> None:
        ids = sorted(device_ids)
        super().__init__(
            f"{fields[0]}, {fields[1]}: device {', '.join(map(str, ids))} is in both",
            {"field": fields[0], "value": ids},
        )
        self.device_ids = ids


class ReservationWithoutDevices(RuleViolation):
    code = "reservation_without_devices"

    def __init__(self, reservation_id: int | None) -> None:
        where = "a reservation" if reservation_id is None else f"reservation {reservation_id}"
        super().__init__(
            f"devices: {where} needs at least one device (to stop it, DELETE it)",
            {
                "field": "devices",
                "reservation_id": None if reservation_id is None else str(reservation_id),
            },
        )


class ReservationNotFound(NotFound):
    code = "reservation_not_found"

    def __init__(self, reservation_id: int) -> None:
        super().__init__(
            f"reservation {reservation_id} does not exist",
            {"reservation_id": str(reservation_id)},
        )


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewReservation:
    devices: frozenset[int]
    frequency: Frequency
    start: datetime
    end: datetime
    target_volume_wh: int
    authority_to_exceed: bool
    wallet: str
    gas_tier: Tier = Tier.STANDARD
    consumption_devices: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class ReservationChange:
    """A PATCH: devices (production) and consumption devices to add and remove, and the
    terms that may change (None: keep)."""

    add_devices: frozenset[int] = frozenset()
    remove_devices: frozenset[int] = frozenset()
    add_consumption_devices: frozenset[int] = frozenset()
    remove_consumption_devices: frozenset[int] = frozenset()
    end: datetime | None = None
    target_volume_wh: int | None = None
    authority_to_exceed: bool | None = None
    frequency: Frequency | None = None  # only to be refused when it differs


@dataclass(frozen=True, slots=True)
class Volumes:
    issued_wh: int
    requested_wh: int
    failed_wh: int
    leftover_wh: int


@dataclass(frozen=True, slots=True)
class ReservationView:
    reservation: StoredReservation
    status: ReservationStatus
    volumes: Volumes


# --- pure helpers -------------------------------------------------------------------------


def checksum_wallet(value: str) -> str:
    """The EIP-55 spelling of an EVM address. All-lower or all-upper hex is accepted;
    mixed case must already be a correct checksum (a typo is refused, not repaired); the
    zero address is refused."""
    if (problem := address_problem(value)) is not None:
        raise InvalidWallet(value, problem)
    if int(value, 16) == 0:  # the registry refuses to mint to it: every item would fail
        raise InvalidWallet(value, "the zero address owns nothing; certificates cannot go there")
    return to_checksum(value)


def status_of(reservation: StoredReservation, now: datetime) -> ReservationStatus:
    """`domain.reservations.reservation_status` of a stored reservation."""
    return reservation_status(
        end=reservation.end,
        ended_at=reservation.ended_at,
        completed_at=reservation.completed_at,
        now=now,
    )


def booking_of(record: BookingRecord) -> DeviceBooking:
    """A stored stint as the domain's `DeviceBooking` (device and reservation as str ids)."""
    return DeviceBooking(
        device=str(record.device_id),
        reservation_id=str(record.reservation_id),
        start=record.start,
        end=record.end,
        released_at=stint_release(
            end=record.end,
            released_at=record.released_at,
            ended_at=record.ended_at,
            completed_at=record.completed_at,
        ),
    )


def covered_until_of(reservation: StoredReservation) -> dict[int, datetime]:
    """`domain.reservations.covered_until` of a stored reservation."""
    return covered_until(
        end=reservation.end,
        ended_at=reservation.ended_at,
        completed_at=reservation.completed_at,
        stints=[Stint(s.device_id, s.released_at) for s in reservation.stints],
    )


def energy_in_span(found: SpanEnergy, start: datetime, end: datetime) -> int:
    """The Wh in `[start, end)` of what `energy_between` found for that span: the whole
    intervals, and the share of each crossing `start` or `end` (`share_in_span`)."""
    return found.inside_wh + sum(share_in_span(i, start, end) for i in found.straddling)


def terms_of(reservation: StoredReservation) -> ReservationTerms:
    return ReservationTerms(
        start=reservation.start,
        end=reservation.end,
        frequency=Frequency(reservation.frequency),
        devices=frozenset(str(d) for d in reservation.held_device_ids),
        target_volume_wh=reservation.target_volume_wh,
        authority_to_exceed=reservation.authority_to_exceed,
    )


# --- access -------------------------------------------------------------------------------


def _scope(principal: Principal) -> int | None:
    """The organization whose reservations the caller may see; None: all of them."""
    require_role(principal, *READERS)
    return principal.organization_id if principal.role == Role.BUYER.value else None


# --- use cases ----------------------------------------------------------------------------


def create_reservation(
    *,
    sessions: sessionmaker[Session],
    principal: Principal,
    new: NewReservation,
    now: datetime,
) -> ReservationView:
    require_role(principal, Role.BUYER)
    now = to_utc(now, field="now")
    wallet = checksum_wallet(new.wallet)
    if not new.devices:
        raise ReservationWithoutDevices(None)
    if both := new.devices & new.consumption_devices:
        raise DeviceAddedAndRemoved(both, ("devices", "consumptionDevices"))
    every = new.devices | new.consumption_devices
    terms = ReservationTerms(
        start=new.start,
        end=new.end,
        frequency=new.frequency,
        devices=frozenset(str(d) for d in every),
        target_volume_wh=new.target_volume_wh,
        authority_to_exceed=new.authority_to_exceed,
    )
    with sessions.begin() as session:
        found = lock_devices(session=session, device_ids=every)
        for field, ids in (
            ("devices", new.devices),
            ("consumptionDevices", new.consumption_devices),
        ):
            if missing := ids - found.keys():
                raise UnknownDevices(field, missing)
        _check_kinds(found, principal, new.devices, new.consumption_devices, "")
        records = booking_records(session=session, device_ids=every)
        validate_reservation(terms, bookings=map(booking_of, records), now=now)
        reservation_id = add_reservation(
            session=session,
            new=NewReservationRow(
                organization_id=principal.organization_id,
                created_by_key_id=principal.api_key_id,
                frequency=terms.frequency.value,
                start=terms.start,
                end=terms.end,
                target_volume_wh=terms.target_volume_wh,
                authority_to_exceed=terms.authority_to_exceed,
                wallet=wallet,
                gas_tier=Tier(new.gas_tier).value,
            ),
            now=now,
        )
        add_devices(session=session, reservation_id=reservation_id, device_ids=every, now=now)
        return _view(session, _must_get(session, reservation_id), now)


def _lock_open(
    session: Session, principal: Principal, reservation_id: int, now: datetime
) -> StoredReservation:
    """The caller's own reservation, locked, that has neither ended nor completed. Another
    organization's reservation answers like a missing one, so its existence never leaks."""
    current = lock_reservation(session=session, reservation_id=reservation_id)
    if current is None or current.organization_id != principal.organization_id:
        raise ReservationNotFound(reservation_id)
    closed = closed_at(
        end=current.end, ended_at=current.ended_at, completed_at=current.completed_at, now=now
    )
    if closed is not None:
        raise ReservationEnded(str(reservation_id), closed)
    return current


def change_reservation(
    *,
    sessions: sessionmaker[Session],
    principal: Principal,
    reservation_id: int,
    change: ReservationChange,
    now: datetime,
) -> ReservationView:
    """Add or remove devices, move `end`, change the target, while the rules allow it."""
    require_role(principal, Role.BUYER)
    now = to_utc(now, field="now")
    with sessions.begin() as session:
        current = _lock_open(session, principal, reservation_id, now)
        held = current.held_device_ids
        adding = change.add_devices | change.add_consumption_devices
        removing = change.remove_devices | change.remove_consumption_devices
        if both := adding & removing:
            raise DeviceAddedAndRemoved(both, ("addDevices", "removeDevices"))
        if both := change.add_devices & change.add_consumption_devices:
            raise DeviceAddedAndRemoved(both, ("addDevices", "addConsumptionDevices"))
        for field, ids, kind in (
            ("removeDevices", change.remove_devices, DeviceKind.PRODUCTION),
            ("removeConsumptionDevices", change.remove_consumption_devices, DeviceKind.CONSUMPTION),
        ):
            if not_held := ids - current.held_ids_of(kind):
                raise DeviceNotInReservation(reservation_id, not_held, field)
        devices = (held | adding) - removing
        production = (
            current.held_ids_of(DeviceKind.PRODUCTION) | change.add_devices
        ) - change.remove_devices
        if not production:
            raise ReservationWithoutDevices(reservation_id)
        added = adding - held
        found = lock_devices(session=session, device_ids=devices)
        for field, ids in (
            ("addDevices", change.add_devices - held),
            ("addConsumptionDevices", change.add_consumption_devices - held),
        ):
            if missing := ids - found.keys():
                raise UnknownDevices(field, missing)
        _check_kinds(
            found,
            principal,
            change.add_devices - held,
            change.add_consumption_devices - held,
            "add",
        )
        current_terms = terms_of(current)
        proposed = replace(
            current_terms,
            devices=frozenset(str(d) for d in devices),
            end=current.end if change.end is None else to_utc(change.end, field="end"),
            frequency=change.frequency or current_terms.frequency,
            target_volume_wh=(
                current.target_volume_wh
                if change.target_volume_wh is None
                else change.target_volume_wh
            ),
            authority_to_exceed=(
                current.authority_to_exceed
                if change.authority_to_exceed is None
                else change.authority_to_exceed
            ),
        )
        records = booking_records(session=session, device_ids=devices)
        validate_reservation_update(
            current_terms,
            proposed,
            reservation_id=str(reservation_id),
            bookings=map(booking_of, records),
            now=now,
        )
        if removing:
            release_devices(
                session=session, reservation_id=reservation_id, device_ids=removing, now=now
            )
        if added:
            add_devices(session=session, reservation_id=reservation_id, device_ids=added, now=now)
        if proposed != replace(current_terms, devices=proposed.devices):
            update_terms(
                session=session,
                reservation_id=reservation_id,
                end=proposed.end,
                target_volume_wh=proposed.target_volume_wh,
                authority_to_exceed=proposed.authority_to_exceed,
                now=now,
            )
        return _view(session, _must_get(session, reservation_id), now)


def end_live_reservation(
    *,
    sessions: sessionmaker[Session],
    principal: Principal,
    reservation_id: int,
    now: datetime,
) -> ReservationView:
    """End a live reservation now: record `ended_at` and release its devices."""
    require_role(principal, Role.BUYER)
    now = to_utc(now, field="now")
    with sessions.begin() as session:
        _lock_open(session, principal, reservation_id, now)
        end_reservation(session=session, reservation_id=reservation_id, now=now)
        return _view(session, _must_get(session, reservation_id), now)


def show_reservation(
    *,
    sessions: sessionmaker[Session],
    principal: Principal,
    reservation_id: int,
    now: datetime,
) -> ReservationView:
    scope = _scope(principal)
    with sessions() as session:
        found = get_reservation(session=session, reservation_id=reservation_id)
        if found is None or scope not in (None, found.organization_id):
            raise ReservationNotFound(reservation_id)
        return _view(session, found, now)


def find_reservations(
    *,
    sessions: sessionmaker[Session],
    principal: Principal,
    limit: int,
    offset: int,
    now: datetime,
) -> list[ReservationView]:
    """A buyer's own reservations; every reservation for issuers and viewers."""
    scope = _scope(principal)
    with sessions() as session:
        found = list_reservations(
            session=session, organization_id=scope, limit=limit, offset=offset
        )
        return [_view(session, reservation, now) for reservation in found]


def reservable_filter(
    *, sessions: sessionmaker[Session], where: DeviceFilter, reservable: bool | None, now: datetime
) -> DeviceFilter:
    """`where` narrowed to the devices that can (True) or cannot (False) be reserved at
    `now`: a device cannot while a reservation holds it or for 12 h after its release.
    The narrowing is a SQL condition the device query evaluates, so it reads nothing
    here (`sessions` is unused)."""
    if reservable is None:
        return where
    cutoff = to_utc(now, field="now") - RELEASE_COOLDOWN
    return replace(where, reservable_clause=reservable_clause(reservable=reservable, cutoff=cutoff))


# --- internals ----------------------------------------------------------------------------


def _check_kinds(
    found: Mapping[int, LockedDevice],
    principal: Principal,
    production: frozenset[int],
    consumption: frozenset[int],
    prefix: str,
) -> None:
    """`check_device_kinds` with the request's field names ("devices" or "addDevices")."""
    production_field = "addDevices" if prefix else "devices"
    consumption_field = "addConsumptionDevices" if prefix else "consumptionDevices"
    check_device_kinds(
        production=(production_field, production),
        consumption=(consumption_field, consumption),
        found={i: (d.organization_id, d.kind) for i, d in found.items()},
        buyer_organization_id=principal.organization_id,
    )


def _must_get(session: Session, reservation_id: int) -> StoredReservation:
    found = get_reservation(session=session, reservation_id=reservation_id)
    assert found is not None, "the reservation was written in this transaction"
    return found


def _view(session: Session, reservation: StoredReservation, now: datetime) -> ReservationView:
    by_until: dict[datetime, list[int]] = defaultdict(list)
    # requestedWh is production's: a consumption meter's energy is not issued against it.
    production = {s.device_id for s in reservation.stints if s.kind is DeviceKind.PRODUCTION}
    for device_id, until in covered_until_of(reservation).items():
        if until > reservation.start and device_id in production:
            by_until[until].append(device_id)
    requested_wh = sum(
        energy_in_span(
            energy_between(session=session, device_ids=ids, start=reservation.start, end=until),
            reservation.start,
            until,
        )
        for until, ids in by_until.items()
    )
    volumes = Volumes(
        issued_wh=reservation.issued_wh,
        requested_wh=requested_wh,
        failed_wh=reservation.failed_wh,
        leftover_wh=reservation.leftover_wh,
    )
    return ReservationView(reservation, status_of(reservation, now), volumes)
