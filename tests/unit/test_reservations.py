"""Reservation rules at their edges, and the target volume split."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from granular.domain.devices import DeviceKind
from granular.domain.reservations import (
    AuthorityToExceedNotBool,
    ConsumptionDeviceNotOwned,
    DeviceAlreadyReserved,
    DeviceBooking,
    DevicePeriodAlreadyReserved,
    DeviceReleaseCooldown,
    InvalidEnergyAmount,
    ReservationDeviceKindMismatch,
    ReservationEnded,
    ReservationEndNotAfterStart,
    ReservationFrequencyFixed,
    ReservationTerms,
    ReservationTooFarInPast,
    TargetSplit,
    TargetVolumeNotPositive,
    apply_target,
    check_device_kinds,
    earliest_allowed,
    validate_reservation,
    validate_reservation_update,
)
from granular.domain.units import NaiveTimestamp
from granular.domain.windows import Frequency, UnknownFrequency
from granular.errors import ValidationError

NOW = datetime(2025, 3, 31, 10, tzinfo=UTC)
LIMIT = datetime(2024, 3, 31, 10, tzinfo=UTC)  # NOW − 12 calendar months
SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)


def terms(**changes: object) -> ReservationTerms:
    base = ReservationTerms(
        start=datetime(2025, 1, 1, tzinfo=UTC),
        end=datetime(2026, 1, 1, tzinfo=UTC),
        frequency=Frequency.MONTHLY,
        devices=frozenset({"dev-1", "dev-2"}),
        target_volume_wh=1_000_000,
        authority_to_exceed=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def booking(
    device: str = "dev-1",
    *,
    released_at: datetime | None = None,
    start: datetime = datetime(2024, 6, 1, tzinfo=UTC),
    end: datetime = datetime(2025, 6, 1, tzinfo=UTC),
    reservation_id: str = "other",
) -> DeviceBooking:
    return DeviceBooking(device, reservation_id, start, end, released_at)


def test_a_valid_reservation_passes() -> None:
    assert validate_reservation(terms(), bookings=[], now=NOW) == terms()


# --- period -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "ok"),
    [(LIMIT, True), (LIMIT - SECOND, False)],
    ids=["exactly-12-months", "1s-earlier"],
)
def test_start_at_most_12_calendar_months_in_the_past(start: datetime, ok: bool) -> None:
    candidate = terms(start=start)
    if ok:
        validate_reservation(candidate, bookings=[], now=NOW)
        return
    with pytest.raises(ReservationTooFarInPast) as raised:
        validate_reservation(candidate, bookings=[], now=NOW)
    assert (raised.value.field, raised.value.limit) == ("start", LIMIT)
    assert raised.value.code == "reservation_too_far_in_past"


@pytest.mark.parametrize(
    ("now", "limit"),
    [
        (datetime(2024, 2, 29, 12, tzinfo=UTC), datetime(2023, 2, 28, 12, tzinfo=UTC)),
        (datetime(2025, 3, 31, 10, tzinfo=UTC), datetime(2024, 3, 31, 10, tzinfo=UTC)),
        (datetime(2025, 1, 15, tzinfo=UTC), datetime(2024, 1, 15, tzinfo=UTC)),
    ],
    ids=["leap-day", "month-end", "mid-month"],
)
def test_12_months_are_calendar_months(now: datetime, limit: datetime) -> None:
    assert earliest_allowed(now) == limit


@pytest.mark.parametrize(
    ("end_offset", "ok"),
    [(SECOND, True), (timedelta(0), False), (-SECOND, False)],
    ids=["1s-after", "equal", "before"],
)
def test_end_after_start(end_offset: timedelta, ok: bool) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    candidate = terms(start=start, end=start + end_offset)
    if ok:
        validate_reservation(candidate, bookings=[], now=NOW)
        return
    with pytest.raises(ReservationEndNotAfterStart):
        validate_reservation(candidate, bookings=[], now=NOW)


def test_naive_timestamps_and_unknown_frequency_refused() -> None:
    with pytest.raises(NaiveTimestamp):
        terms(start=datetime(2025, 1, 1))
    with pytest.raises(UnknownFrequency):
        terms(frequency="fortnightly")


# --- target and authority -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"target_volume_wh": 0}, TargetVolumeNotPositive),
        ({"target_volume_wh": -1}, TargetVolumeNotPositive),
        ({"target_volume_wh": True}, TargetVolumeNotPositive),
        ({"target_volume_wh": "5"}, TargetVolumeNotPositive),
        ({"authority_to_exceed": 1}, AuthorityToExceedNotBool),
        ({"authority_to_exceed": "yes"}, AuthorityToExceedNotBool),
    ],
    ids=["zero", "negative", "bool", "string", "authority-int", "authority-string"],
)
def test_target_and_authority_types(
    changes: dict[str, object], error: type[ValidationError]
) -> None:
    with pytest.raises(error):
        validate_reservation(terms(**changes), bookings=[], now=NOW)


def test_target_of_1_wh_is_enough() -> None:
    validate_reservation(terms(target_volume_wh=1, authority_to_exceed=True), bookings=[], now=NOW)


# --- devices ------------------------------------------------------------------------------


def test_device_in_another_live_reservation_refused() -> None:
    with pytest.raises(DeviceAlreadyReserved) as raised:
        validate_reservation(terms(), bookings=[booking("dev-2")], now=NOW)
    assert (raised.value.device, raised.value.reservation_id) == ("dev-2", "other")


def test_booking_of_an_unrequested_device_is_irrelevant() -> None:
    validate_reservation(terms(), bookings=[booking("dev-3")], now=NOW)


RELEASED = datetime(2024, 12, 31, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "ok"),
    [(RELEASED + 12 * HOUR, True), (RELEASED + 12 * HOUR - SECOND, False)],
    ids=["exactly-12h-after-release", "1s-earlier"],
)
def test_released_device_may_be_reserved_again_12h_later(now: datetime, ok: bool) -> None:
    previous = booking(released_at=RELEASED)  # covered [2024-06-01, RELEASED)
    candidate = terms(start=RELEASED)
    if ok:
        validate_reservation(candidate, bookings=[previous], now=now)
        return
    with pytest.raises(DeviceReleaseCooldown) as raised:
        validate_reservation(candidate, bookings=[previous], now=now)
    assert raised.value.available_at == RELEASED + 12 * HOUR


def test_release_in_the_future_still_holds_the_device() -> None:
    with pytest.raises(DeviceAlreadyReserved):
        validate_reservation(terms(), bookings=[booking(released_at=NOW + SECOND)], now=NOW)


@pytest.mark.parametrize(
    ("start", "ok"),
    [(RELEASED, True), (RELEASED - SECOND, False)],
    ids=["starts-at-release", "reaches-1s-back"],
)
def test_new_reservation_must_not_cover_the_period_already_reserved(
    start: datetime, ok: bool
) -> None:
    previous = booking(released_at=RELEASED)  # covered [2024-06-01, RELEASED)
    candidate = terms(start=start)
    if ok:
        validate_reservation(candidate, bookings=[previous], now=NOW)
        return
    with pytest.raises(DevicePeriodAlreadyReserved) as raised:
        validate_reservation(candidate, bookings=[previous], now=NOW)
    assert raised.value.covered_end == RELEASED


# --- updates ------------------------------------------------------------------------------


def test_frequency_is_fixed() -> None:
    with pytest.raises(ReservationFrequencyFixed) as raised:
        validate_reservation_update(
            terms(),
            terms(frequency=Frequency.WEEKLY),
            reservation_id="r-1",
            bookings=[],
            now=NOW,
        )
    assert (raised.value.current, raised.value.requested) == (Frequency.MONTHLY, Frequency.WEEKLY)
    assert raised.value.code == "frequency_change_not_allowed"


def test_ended_reservation_cannot_change() -> None:
    with pytest.raises(ReservationEnded):
        validate_reservation_update(
            terms(), terms(), reservation_id="r-1", bookings=[], now=NOW, ended_at=NOW - HOUR
        )


def test_adding_a_device_checks_it_and_ignores_own_bookings() -> None:
    current = terms()
    own = [booking("dev-1", reservation_id="r-1"), booking("dev-2", reservation_id="r-1")]
    added = terms(devices=frozenset({"dev-1", "dev-2", "dev-3"}))
    assert (
        validate_reservation_update(current, added, reservation_id="r-1", bookings=own, now=NOW)
        == added
    )
    with pytest.raises(DeviceAlreadyReserved):
        validate_reservation_update(
            current, added, reservation_id="r-1", bookings=[*own, booking("dev-3")], now=NOW
        )


def test_devices_already_in_the_reservation_are_not_checked_again() -> None:
    # dev-2 was admitted earlier; a booking elsewhere seen now does not block adding dev-3.
    added = terms(devices=frozenset({"dev-1", "dev-2", "dev-3"}))
    validate_reservation_update(
        terms(), added, reservation_id="r-1", bookings=[booking("dev-2")], now=NOW
    )


def test_changing_the_period_checks_every_device_but_not_against_itself() -> None:
    current = terms()
    longer = terms(end=datetime(2026, 6, 1, tzinfo=UTC))
    own = [booking("dev-1", reservation_id="r-1", start=current.start, end=current.end)]
    validate_reservation_update(current, longer, reservation_id="r-1", bookings=own, now=NOW)
    with pytest.raises(DeviceAlreadyReserved):
        validate_reservation_update(
            current, longer, reservation_id="r-1", bookings=[*own, booking("dev-2")], now=NOW
        )


def test_removing_a_device_needs_no_check() -> None:
    removed = terms(devices=frozenset({"dev-1"}))
    validate_reservation_update(
        terms(), removed, reservation_id="r-1", bookings=[booking("dev-2")], now=NOW
    )


def test_an_old_reservation_can_still_get_a_device() -> None:
    old = terms(start=LIMIT - timedelta(days=30))  # was valid when created
    added = replace(old, devices=old.devices | {"dev-3"})
    validate_reservation_update(old, added, reservation_id="r-1", bookings=[], now=NOW)


@pytest.mark.parametrize(
    ("end", "ok"), [(LIMIT, True), (LIMIT - SECOND, False)], ids=["exactly-12-months", "1s-earlier"]
)
def test_a_changed_end_obeys_the_12_month_limit(end: datetime, ok: bool) -> None:
    old = terms(start=LIMIT - timedelta(days=30), end=NOW)
    moved = replace(old, end=end)
    if ok:
        validate_reservation_update(old, moved, reservation_id="r-1", bookings=[], now=NOW)
        return
    with pytest.raises(ReservationTooFarInPast) as raised:
        validate_reservation_update(old, moved, reservation_id="r-1", bookings=[], now=NOW)
    assert raised.value.field == "end"


# --- target volume ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "issued", "authority", "energy", "expected"),
    [
        (100, 0, False, 60, (60, 0, False)),
        (100, 60, False, 40, (40, 0, True)),  # exactly at the target
        (100, 60, False, 41, (40, 1, True)),  # 1 Wh over: partial, 1 Wh leftover
        (100, 60, True, 41, (41, 0, True)),  # authority: continues
        (100, 100, False, 10, (0, 10, False)),  # already reached: all leftover
        (100, 100, True, 10, (10, 0, False)),  # already reached, warned before
        (100, 99, False, 0, (0, 0, False)),
        (100, 150, True, 5, (5, 0, False)),
    ],
    ids=[
        "below-target",
        "exactly-at-target",
        "1wh-over-no-authority",
        "1wh-over-with-authority",
        "after-target-no-authority",
        "after-target-with-authority",
        "no-energy",
        "beyond-target-with-authority",
    ],
)
def test_apply_target(
    target: int, issued: int, authority: bool, energy: int, expected: tuple[int, int, bool]
) -> None:
    assert apply_target(target, issued, authority, energy) == TargetSplit(*expected)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0, 0, False, 1), TargetVolumeNotPositive),
        ((10, -1, False, 1), InvalidEnergyAmount),
        ((10, 0, False, -1), InvalidEnergyAmount),
        ((10, 0, 1, 1), AuthorityToExceedNotBool),
    ],
    ids=["zero-target", "negative-issued", "negative-energy", "authority-not-bool"],
)
def test_apply_target_refuses_bad_arguments(
    args: tuple[int, int, bool, int], error: type[ValidationError]
) -> None:
    with pytest.raises(error):
        apply_target(*args)


@given(
    target=st.integers(1, 10**12),
    issued=st.integers(0, 2 * 10**12),
    authority=st.booleans(),
    energy=st.integers(0, 10**12),
)
@settings(max_examples=200)
def test_apply_target_conserves_energy_and_never_exceeds_without_authority(
    target: int, issued: int, authority: bool, energy: int
) -> None:
    issue_wh, leftover_wh, reached = apply_target(target, issued, authority, energy)
    assert issue_wh + leftover_wh == energy
    assert issue_wh >= 0 and leftover_wh >= 0
    if authority:
        assert leftover_wh == 0
    elif issued <= target:
        assert issued + issue_wh <= target
        assert leftover_wh == 0 or issued + issue_wh == target
    assert reached == (issued < target <= issued + energy)


# --- device kinds -------------------------------------------------------------------------


def test_device_kinds_name_the_field_and_every_offending_id() -> None:
    found = {
        1: (7, DeviceKind.PRODUCTION),
        2: (7, DeviceKind.CONSUMPTION),
        3: (7, DeviceKind.CONSUMPTION),
        4: (8, DeviceKind.CONSUMPTION),
        5: (9, DeviceKind.PRODUCTION),
    }

    def check(production: set[int], consumption: set[int]) -> None:
        check_device_kinds(
            production=("devices", production),
            consumption=("consumptionDevices", consumption),
            found=found,
            buyer_organization_id=7,
        )

    check({1, 5, 99}, {2, 3})  # another organization's plant is fine; 99 is not found here
    with pytest.raises(ReservationDeviceKindMismatch) as raised:
        check({1, 2, 3}, set())
    assert raised.value.details == {
        "field": "devices",
        "value": [2, 3],
        "rule": "kind production",
    }
    with pytest.raises(ReservationDeviceKindMismatch) as raised:
        check({1}, {2, 5})
    assert (raised.value.field, raised.value.device_ids) == ("consumptionDevices", [5])
    with pytest.raises(ConsumptionDeviceNotOwned) as not_owned:
        check({1}, {2, 4})
    assert (not_owned.value.field, not_owned.value.device_ids) == ("consumptionDevices", [4])
