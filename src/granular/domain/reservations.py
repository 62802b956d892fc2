"""Reservation rules (DESIGN.md §4 "Windows and reservations").

- ``start`` and ``end`` may lie in the past by at most 12 *calendar* months before
  `now`: the limit is `now` moved back 12 months with the day clamped to the month's
  length (now 2024-02-29T10:00Z → limit 2023-02-28T10:00Z). Exactly at the limit is
  accepted, one microsecond earlier is refused.
- ``end`` is after ``start``; ``target_volume_wh`` is a positive int;
  ``authority_to_exceed`` is a bool.
- The frequency is fixed for the life of the reservation: an update that changes it is
  refused, as is any update to an ended reservation.
- Devices are exclusive. A device held by another live reservation is refused. A device
  released by another reservation (ended, completed or removed from it) may be reserved
  again 12 hours after its release (exactly 12 h is accepted, 1 s earlier refused).
  Beyond the design's wording, and so that no energy is certified twice, the new
  reservation's ``[start, end)`` must not overlap the period the earlier one covered for
  that device (``[its start, min(its end, release))``); a start in the past could
  otherwise reach back into it.
- Kinds: ``devices`` are production devices (any organization's); ``consumptionDevices``
  are consumption meters of the buyer's own organization (`check_device_kinds`). Both
  are bookings alike: the same exclusivity and 12-hour release rules apply to them.
- `apply_target` decides how much of newly known energy may still be issued.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from granular.domain.devices import DeviceKind
from granular.domain.units import RuleViolation, shift_months, to_utc
from granular.domain.windows import Frequency, parse_frequency

PAST_LIMIT_MONTHS = 12
RELEASE_COOLDOWN = timedelta(hours=12)


# --- errors -------------------------------------------------------------------------------


class ReservationEndNotAfterStart(RuleViolation):
    code = "reservation_end_not_after_start"

    def __init__(self, start: datetime, end: datetime) -> None:
        super().__init__(
            f"end: {end.isoformat()} is not after start {start.isoformat()}",
            {"field": "end", "value": end.isoformat(), "start": start.isoformat()},
        )
        self.start = start
        self.end = end


class ReservationTooFarInPast(RuleViolation):
    code = "reservation_too_far_in_past"

    def __init__(self, field: str, value: datetime, limit: datetime) -> None:
        super().__init__(
            f"{field}: {value.isoformat()} is more than {PAST_LIMIT_MONTHS} months in the past "
            f"(earliest allowed {limit.isoformat()})",
            {"field": field, "value": value.isoformat(), "limit": limit.isoformat()},
        )
        self.field = field
        self.value = value
        self.limit = limit


class TargetVolumeNotPositive(RuleViolation):
    code = "target_volume_not_positive"

    def __init__(self, value: object) -> None:
        super().__init__(
            f"target_volume_wh: {value!r} must be a positive integer of Wh",
            {"field": "target_volume_wh", "value": repr(value)},
        )
        self.value = value


class AuthorityToExceedNotBool(RuleViolation):
    code = "authority_to_exceed_not_bool"

    def __init__(self, value: object) -> None:
        super().__init__(
            f"authority_to_exceed: {value!r} must be true or false",
            {"field": "authority_to_exceed", "value": repr(value)},
        )
        self.value = value


class ReservationFrequencyFixed(RuleViolation):
    code = "frequency_change_not_allowed"

    def __init__(self, reservation_id: str, current: Frequency, requested: Frequency) -> None:
        super().__init__(
            f"reservation {reservation_id}: frequency is fixed at {current.value}, "
            f"cannot change it to {requested.value}",
            {
                "reservation_id": reservation_id,
                "field": "frequency",
                "value": requested.value,
                "current": current.value,
            },
        )
        self.reservation_id = reservation_id
        self.current = current
        self.requested = requested


class ReservationEnded(RuleViolation):
    code = "reservation_ended"

    def __init__(self, reservation_id: str, ended_at: datetime) -> None:
        super().__init__(
            f"reservation {reservation_id} ended at {ended_at.isoformat()}; it cannot change",
            {"reservation_id": reservation_id, "ended_at": ended_at.isoformat()},
        )
        self.reservation_id = reservation_id
        self.ended_at = ended_at


class DeviceAlreadyReserved(RuleViolation):
    code = "device_already_reserved"

    def __init__(self, device: str, reservation_id: str) -> None:
        super().__init__(
            f"device {device} belongs to live reservation {reservation_id}",
            {"device": device, "reservation_id": reservation_id},
        )
        self.device = device
        self.reservation_id = reservation_id


class DeviceReleaseCooldown(RuleViolation):
    code = "device_release_cooldown"

    def __init__(
        self, device: str, reservation_id: str, released_at: datetime, available_at: datetime
    ) -> None:
        super().__init__(
            f"device {device} was released by reservation {reservation_id} at "
            f"{released_at.isoformat()}; it can be reserved again from "
            f"{available_at.isoformat()} ({RELEASE_COOLDOWN} later)",
            {
                "device": device,
                "reservation_id": reservation_id,
                "released_at": released_at.isoformat(),
                "available_at": available_at.isoformat(),
            },
        )
        self.device = device
        self.reservation_id = reservation_id
        self.released_at = released_at
        self.available_at = available_at


class DevicePeriodAlreadyReserved(RuleViolation):
    code = "device_period_already_reserved"

    def __init__(
        self, device: str, reservation_id: str, covered_start: datetime, covered_end: datetime
    ) -> None:
        super().__init__(
            f"device {device} was reserved by {reservation_id} for "
            f"[{covered_start.isoformat()}, {covered_end.isoformat()}); a new reservation "
            "must not overlap it",
            {
                "device": device,
                "reservation_id": reservation_id,
                "covered_start": covered_start.isoformat(),
                "covered_end": covered_end.isoformat(),
            },
        )
        self.device = device
        self.reservation_id = reservation_id
        self.covered_start = covered_start
        self.covered_end = covered_end


class InvalidEnergyAmount(RuleViolation):
    code = "invalid_energy_amount"

    def __init__(self, field: str, value: object) -> None:
        super().__init__(
            f"{field}: {value!r} must be a non-negative integer of Wh",
            {"field": field, "value": repr(value)},
        )
        self.field = field
        self.value = value


class ReservationDeviceKindMismatch(RuleViolation):
    """`devices` takes production devices, `consumptionDevices` consumption meters."""

    code = "reservation_device_kind_mismatch"

    def __init__(self, field: str, device_ids: Iterable[int], expected: DeviceKind) -> None:
        ids = sorted(device_ids)
        super().__init__(
            f"{field}: device {', '.join(map(str, ids))} is not of kind {expected.value}",
            {"field": field, "value": ids, "rule": f"kind {expected.value}"},
        )
        self.field = field
        self.device_ids = ids
        self.expected = expected


class ConsumptionDeviceNotOwned(RuleViolation):
    """A buyer's consumption devices are its own organization's meters."""

    code = "consumption_device_not_owned"

    def __init__(self, field: str, device_ids: Iterable[int]) -> None:
        ids = sorted(device_ids)
        super().__init__(
            f"{field}: device {', '.join(map(str, ids))} is not a device of your organization",
            {"field": field, "value": ids, "rule": "the buyer's own organization"},
        )
        self.field = field
        self.device_ids = ids


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReservationTerms:
    """What a buyer asks for. Timestamps are normalised to UTC (naive ones refused)."""

    start: datetime
    end: datetime
    frequency: Frequency
    devices: frozenset[str]
    target_volume_wh: int
    authority_to_exceed: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", to_utc(self.start, field="start"))
        object.__setattr__(self, "end", to_utc(self.end, field="end"))
        object.__setattr__(self, "frequency", parse_frequency(self.frequency))
        object.__setattr__(self, "devices", frozenset(self.devices))


@dataclass(frozen=True, slots=True)
class DeviceBooking:
    """A device's place in another reservation.

    `released_at`: when the device left it (reservation ended, completed or deleted, or
    the device removed); None while the reservation still holds it.
    """

    device: str
    reservation_id: str
    start: datetime
    end: datetime
    released_at: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", to_utc(self.start, field="start"))
        object.__setattr__(self, "end", to_utc(self.end, field="end"))
        if self.released_at is not None:
            object.__setattr__(self, "released_at", to_utc(self.released_at, field="released_at"))

    def is_live(self, now: datetime) -> bool:
        return self.released_at is None or now < self.released_at

    @property
    def available_at(self) -> datetime | None:
        """When the device may be reserved again; None while held."""
        if self.released_at is None:
            return None
        return self.released_at + RELEASE_COOLDOWN

    @property
    def covered_end(self) -> datetime:
        """End of the period this reservation covered for the device."""
        if self.released_at is None:
            return self.end
        return min(self.end, self.released_at)


class ReservationStatus(StrEnum):
    LIVE = "live"
    ENDED = "ended"
    COMPLETED = "completed"


class Stint(NamedTuple):
    """A device's time in one reservation: it joined at the reservation's start and left
    at `released_at` (removed from it), or is still held (None)."""

    device_id: int
    released_at: datetime | None


class TargetSplit(NamedTuple):
    issue_wh: int
    leftover_wh: int
    target_reached: bool


# --- status and release -------------------------------------------------------------------


def closed_at(
    *, end: datetime, ended_at: datetime | None, completed_at: datetime | None, now: datetime
) -> datetime | None:
    """When the reservation stopped being live: the first of its ending (DELETE), its
    completion (target reached) and `end` once `now` has reached it; None while live."""
    moments = [m for m in (ended_at, completed_at) if m is not None]
    if now >= end:
        moments.append(end)
    return min(moments) if moments else None


def reservation_status(
    *, end: datetime, ended_at: datetime | None, completed_at: datetime | None, now: datetime
) -> ReservationStatus:
    """`ended` when its buyer ended it; else `completed` once it closed (target reached or
    `end` passed); else `live`."""
    if ended_at is not None:
        return ReservationStatus.ENDED
    if closed_at(end=end, ended_at=ended_at, completed_at=completed_at, now=now) is not None:
        return ReservationStatus.COMPLETED
    return ReservationStatus.LIVE


def stint_release(
    *,
    end: datetime,
    released_at: datetime | None,
    ended_at: datetime | None,
    completed_at: datetime | None,
) -> datetime:
    """When a device's stint ends: its own release, or the reservation's, whichever is
    first; `end` when nothing released it earlier (in the future while it is held)."""
    return min(m for m in (end, released_at, ended_at, completed_at) if m is not None)


def blocks_device(booking: DeviceBooking, now: datetime) -> bool:
    """True while the booking keeps the device from another reservation: it is held, or
    was released less than 12 h ago. (GET /devices?reservable applies the same rule in
    SQL: `adapters.db.reservations.reservable_clause`.)"""
    available_at = booking.available_at
    return booking.is_live(now) or available_at is None or now < available_at


def covered_until(
    *,
    end: datetime,
    ended_at: datetime | None,
    completed_at: datetime | None,
    stints: Iterable[Stint],
) -> dict[int, datetime]:
    """For each device ever in the reservation, the end of the period it covered (every
    stint starts at the reservation's `start`; a device added twice covers the longer)."""
    until: dict[int, datetime] = {}
    for stint in stints:
        moment = stint_release(
            end=end, released_at=stint.released_at, ended_at=ended_at, completed_at=completed_at
        )
        until[stint.device_id] = max(moment, until.get(stint.device_id, moment))
    return until


# --- rules --------------------------------------------------------------------------------


def earliest_allowed(now: datetime) -> datetime:
    """The earliest `start`/`end` a reservation may have: `now` − 12 calendar months."""
    return shift_months(to_utc(now, field="now"), -PAST_LIMIT_MONTHS)


def validate_reservation(
    terms: ReservationTerms, *, bookings: Iterable[DeviceBooking], now: datetime
) -> ReservationTerms:
    """Check a new reservation; return it or raise the first broken rule.

    `bookings`: every booking of the requested devices in other reservations (live or
    released; released ones only matter for the cool-down and the covered period).
    """
    now = to_utc(now, field="now")
    _check_period(terms, now, check_start=True, check_end=True)
    _check_target(terms)
    _check_devices(terms, terms.devices, bookings, now, own_reservation_id=None)
    return terms


def validate_reservation_update(
    current: ReservationTerms,
    proposed: ReservationTerms,
    *,
    reservation_id: str,
    bookings: Iterable[DeviceBooking],
    now: datetime,
    ended_at: datetime | None = None,
) -> ReservationTerms:
    """Check an update of reservation `reservation_id` (e.g. devices added or removed).

    Refused when the reservation has ended or the frequency changes. The 12-month limit
    applies only to a `start`/`end` that changes (an old reservation may still get a device).
    Added devices are checked for exclusivity (all devices when the period changes);
    bookings of `reservation_id` itself are ignored. Removed devices need no check.
    """
    now = to_utc(now, field="now")
    if ended_at is not None:
        raise ReservationEnded(reservation_id, to_utc(ended_at, field="ended_at"))
    if proposed.frequency is not current.frequency:
        raise ReservationFrequencyFixed(reservation_id, current.frequency, proposed.frequency)
    period_changed = (proposed.start, proposed.end) != (current.start, current.end)
    _check_period(
        proposed,
        now,
        check_start=proposed.start != current.start,
        check_end=proposed.end != current.end,
    )
    _check_target(proposed)
    to_check = proposed.devices if period_changed else proposed.devices - current.devices
    _check_devices(proposed, to_check, bookings, now, own_reservation_id=reservation_id)
    return proposed


def _check_period(
    terms: ReservationTerms, now: datetime, *, check_start: bool, check_end: bool
) -> None:
    if terms.end <= terms.start:
        raise ReservationEndNotAfterStart(terms.start, terms.end)
    limit = earliest_allowed(now)
    if check_start and terms.start < limit:
        raise ReservationTooFarInPast("start", terms.start, limit)
    if check_end and terms.end < limit:
        raise ReservationTooFarInPast("end", terms.end, limit)


def _check_target(terms: ReservationTerms) -> None:
    volume = terms.target_volume_wh
    if isinstance(volume, bool) or not isinstance(volume, int) or volume <= 0:
        raise TargetVolumeNotPositive(volume)
    if not isinstance(terms.authority_to_exceed, bool):
        raise AuthorityToExceedNotBool(terms.authority_to_exceed)


def _check_devices(
    terms: ReservationTerms,
    devices: frozenset[str],
    bookings: Iterable[DeviceBooking],
    now: datetime,
    *,
    own_reservation_id: str | None,
) -> None:
    relevant = sorted(
        (b for b in bookings if b.device in devices and b.reservation_id != own_reservation_id),
        key=lambda b: (b.device, b.reservation_id),
    )
    for booking in relevant:
        if booking.is_live(now):
            raise DeviceAlreadyReserved(booking.device, booking.reservation_id)
        assert booking.released_at is not None and booking.available_at is not None
        if now < booking.available_at:
            raise DeviceReleaseCooldown(
                booking.device, booking.reservation_id, booking.released_at, booking.available_at
            )
        if terms.start < booking.covered_end and booking.start < terms.end:
            raise DevicePeriodAlreadyReserved(
                booking.device, booking.reservation_id, booking.start, booking.covered_end
            )


def check_device_kinds(
    *,
    production: tuple[str, Collection[int]],
    consumption: tuple[str, Collection[int]],
    found: Mapping[int, tuple[int, DeviceKind]],
    buyer_organization_id: int,
) -> None:
    """Each (field, ids) pair of a reservation's devices, against each device's (owner
    organization, kind) in `found` (ids missing from it are someone else's concern):
    production ids must name production devices; consumption ids consumption devices of
    the buyer's own organization. Raises for the first field at fault, naming every
    offending id of it."""
    field, ids = production
    if wrong := [i for i in ids if i in found and found[i][1] is not DeviceKind.PRODUCTION]:
        raise ReservationDeviceKindMismatch(field, wrong, DeviceKind.PRODUCTION)
    field, ids = consumption
    if wrong := [i for i in ids if i in found and found[i][1] is not DeviceKind.CONSUMPTION]:
        raise ReservationDeviceKindMismatch(field, wrong, DeviceKind.CONSUMPTION)
    if foreign := [i for i in ids if i in found and found[i][0] != buyer_organization_id]:
        raise ConsumptionDeviceNotOwned(field, foreign)


def apply_target(
    target_volume_wh: int, issued_wh: int, authority_to_exceed: bool, energy_wh: int
) -> TargetSplit:
    """How much of `energy_wh` (newly known for a reservation) to issue.

    `issued_wh` is what the reservation has issued so far. Without authority to exceed,
    issuance stops exactly at the target: the part that reaches it is issued, the rest is
    `leftover_wh` (and once the target is met everything is leftover). With authority,
    everything is issued. `target_reached` is True when *this* energy makes the issued
    total reach the target for the first time: the moment to warn the buyer, and, without
    authority, to complete the reservation.
    """
    if isinstance(target_volume_wh, bool) or target_volume_wh <= 0:
        raise TargetVolumeNotPositive(target_volume_wh)
    for name, value in (("issued_wh", issued_wh), ("energy_wh", energy_wh)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidEnergyAmount(name, value)
    if not isinstance(authority_to_exceed, bool):
        raise AuthorityToExceedNotBool(authority_to_exceed)
    target_reached = issued_wh < target_volume_wh <= issued_wh + energy_wh
    if authority_to_exceed:
        return TargetSplit(energy_wh, 0, target_reached)
    issue_wh = min(energy_wh, max(target_volume_wh - issued_wh, 0))
    return TargetSplit(issue_wh, energy_wh - issue_wh, target_reached)
