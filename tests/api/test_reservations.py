"""/reservations: round trips, every rule at its edge, access, volumes, the reservable
filter on GET /devices, and two buyers racing for one device."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, insert, literal, select
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db import reservations as store
from granular.adapters.db.devices import DeviceRow
from granular.domain.windows import Frequency
from granular.errors import GranularError
from granular.services import reservations as service
from granular.services.accounts import authenticate, create_api_key
from tests.api.conftest import NOW, Clock, Keys
from tests.api.test_devices import device

SECOND = timedelta(seconds=1)
TWELVE_HOURS = timedelta(hours=12)
WALLET = "0x52908400098527886e0f7030069857d2e4169ee7"
WALLET_CHECKSUMMED = "0x52908400098527886E0F7030069857D2E4169EE7"
START = "2026-07-01T00:00:00Z"
END = "2027-01-01T00:00:00Z"


@pytest.fixture
def ids(client: TestClient, keys: Keys) -> dict[str, int]:
    """Three devices of "Solar Co": externalId → id (as GET /devices returns it)."""
    found: dict[str, int] = {}
    for external_id in ("site-1", "site-2", "site-3"):
        created = client.post("/devices", headers=keys.owner, json=device(external_id))
        assert created.status_code == 201, created.text
        found[external_id] = created.json()["device"]["id"]
    return found


def body(devices: list[int], /, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "devices": devices,
        "frequency": "monthly",
        "start": START,
        "end": END,
        "targetVolumeWh": 1_000_000,
        "authorityToExceed": False,
        "wallet": WALLET,
    }
    payload.update(overrides)
    return payload


def reserve(
    client: TestClient, headers: dict[str, str], devices: list[int], **overrides: Any
) -> Any:
    response = client.post("/reservations", headers=headers, json=body(devices, **overrides))
    assert response.status_code == 201, response.text
    return response.json()


def error_of(response: Any, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


# --- round trips --------------------------------------------------------------------------


def test_create_then_get_round_trip(client: TestClient, keys: Keys, ids: dict[str, int]) -> None:
    created = reserve(
        client,
        keys.buyer,
        [ids["site-2"], ids["site-1"]],
        start="2026-07-01T02:00:00+02:00",
        gasTier="fast",
    )
    assert created == {
        "id": created["id"],
        "organizationId": created["organizationId"],
        "status": "live",
        "devices": sorted([ids["site-1"], ids["site-2"]]),
        "consumptionDevices": [],
        "deviceHistory": [
            {"deviceId": i, "kind": "production", "addedAt": NOW.isoformat(), "releasedAt": None}
            for i in sorted([ids["site-1"], ids["site-2"]])
        ],
        "frequency": "monthly",
        "start": "2026-07-01T00:00:00+00:00",
        "end": "2027-01-01T00:00:00+00:00",
        "targetVolumeWh": 1_000_000,
        "authorityToExceed": False,
        "wallet": WALLET_CHECKSUMMED,
        "gasTier": "fast",
        "createdAt": NOW.isoformat(),
        "updatedAt": NOW.isoformat(),
        "endedAt": None,
        "completedAt": None,
        "volumes": {"issuedWh": 0, "requestedWh": 0, "failedWh": 0, "leftoverWh": 0},
    }
    fetched = client.get(f"/reservations/{created['id']}", headers=keys.buyer)
    assert (fetched.status_code, fetched.json()) == (200, created)
    listed = client.get("/reservations", headers=keys.buyer).json()
    assert listed == {"reservations": [created], "limit": 100, "offset": 0}


def test_defaults_gas_tier_standard_and_no_authority_to_exceed(
    client: TestClient, keys: Keys, ids: dict[str, int]
) -> None:
    payload = body([ids["site-1"]])
    del payload["authorityToExceed"]
    response = client.post("/reservations", headers=keys.buyer, json=payload)
    assert response.status_code == 201, response.text
    assert (response.json()["gasTier"], response.json()["authorityToExceed"]) == (
        "standard",
        False,
    )


def test_patch_adds_and_removes_devices_and_changes_end_and_target(
    client: TestClient, keys: Keys, ids: dict[str, int], clock: Clock
) -> None:
    created = reserve(client, keys.buyer, [ids["site-1"], ids["site-2"]])
    clock.now = NOW + timedelta(hours=1)
    patch = {
        "addDevices": [ids["site-3"]],
        "removeDevices": [ids["site-1"]],
        "end": "2027-02-01T00:00:00Z",
        "targetVolumeWh": 2_000_000,
        "authorityToExceed": True,
        "frequency": "monthly",  # unchanged: allowed
    }
    response = client.patch(f"/reservations/{created['id']}", headers=keys.buyer, json=patch)
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["devices"] == sorted([ids["site-2"], ids["site-3"]])
    assert (changed["end"], changed["targetVolumeWh"], changed["authorityToExceed"]) == (
        "2027-02-01T00:00:00+00:00",
        2_000_000,
        True,
    )
    assert changed["updatedAt"] == clock.now.isoformat()
    history = {(h["deviceId"], h["addedAt"], h["releasedAt"]) for h in changed["deviceHistory"]}
    assert history == {
        (ids["site-1"], NOW.isoformat(), clock.now.isoformat()),
        (ids["site-2"], NOW.isoformat(), None),
        (ids["site-3"], clock.now.isoformat(), None),
    }
    assert client.get(f"/reservations/{created['id']}", headers=keys.buyer).json() == changed


def test_a_removed_device_can_come_back_to_the_same_reservation_at_once(
    client: TestClient, keys: Keys, ids: dict[str, int]
) -> None:
    created = reserve(client, keys.buyer, [ids["site-1"], ids["site-2"]])
    url = f"/reservations/{created['id']}"
    removed = client.patch(url, headers=keys.buyer, json={"removeDevices": [ids["site-1"]]})
    assert removed.json()["devices"] == [ids["site-2"]]
    back = client.patch(url, headers=keys.buyer, json={"addDevices": [ids["site-1"]]})
    assert back.status_code == 200, back.text
    assert back.json()["devices"] == sorted([ids["site-1"], ids["site-2"]])
    assert len(back.json()["deviceHistory"]) == 3


def test_delete_ends_and_releases_then_nothing_changes_it(
    client: TestClient, keys: Keys, ids: dict[str, int], clock: Clock
) -> None:
    created = reserve(client, keys.buyer, [ids["site-1"]])
    url = f"/reservations/{created['id']}"
    clock.now = NOW + timedelta(minutes=5)
    ended = client.delete(url, headers=keys.buyer)
    assert ended.status_code == 200, ended.text
    assert ended.json()["status"] == "ended"
    assert ended.json()["endedAt"] == clock.now.isoformat()
    assert ended.json()["devices"] == []
    assert ended.json()["deviceHistory"][0]["releasedAt"] == clock.now.isoformat()
    assert client.get(url, headers=keys.buyer).json() == ended.json()
    again = error_of(client.delete(url, headers=keys.buyer))
    assert again["code"] == "reservation_ended"
    assert again["details"]["endedAt"] == clock.now.isoformat()
    patched = client.patch(url, headers=keys.buyer, json={"targetVolumeWh": 5})
    assert error_of(patched)["code"] == "reservation_ended"


def test_a_reservation_past_its_end_is_completed_and_cannot_change(
    client: TestClient, keys: Keys, ids: dict[str, int], clock: Clock
) -> None:
    created = reserve(client, keys.buyer, [ids["site-1"]], end="2026-07-02T00:00:00Z")
    url = f"/reservations/{created['id']}"
    clock.now = datetime(2026, 7, 2, tzinfo=UTC) - SECOND
    assert client.get(url, headers=keys.buyer).json()["status"] == "live"
    clock.now = datetime(2026, 7, 2, tzinfo=UTC)
    assert client.get(url, headers=keys.buyer).json()["status"] == "completed"
    refused = error_of(client.patch(url, headers=keys.buyer, json={"targetVolumeWh": 5}))
    assert (refused["code"], refused["details"]["endedAt"]) == (
        "reservation_ended",
        "2026-07-02T00:00:00+00:00",
    )
    assert error_of(client.delete(url, headers=keys.buyer))["code"] == "reservation_ended"


# --- rules at their edges -----------------------------------------------------------------


LIMIT = datetime(2025, 6, 15, 12, tzinfo=UTC)  # NOW − 12 calendar months


@pytest.mark.parametrize(
    ("start", "status"),
    [(LIMIT, 201), (LIMIT - SECOND, 422)],
    ids=["exactly-12-months", "1s-earlier"],
)
def test_start_at_most_12_months_in_the_past(
    client: TestClient, keys: Keys, ids: dict[str, int], start: datetime, status: int
) -> None:
    payload = body([ids["site-1"]], start=start.isoformat())
    response = client.post("/reservations", headers=keys.buyer, json=payload)
    assert response.status_code == status, response.text
    if status == 422:
        error = error_of(response)
        assert error["code"] == "reservation_too_far_in_past"
        assert (error["details"]["field"], error["details"]["limit"]) == (
            "start",
            LIMIT.isoformat(),
        )


@pytest.mark.parametrize(
    ("end", "status"),
    [(LIMIT + timedelta(days=1), 200), (LIMIT + timedelta(days=1) - SECOND, 422)],
    ids=["exactly-12-months", "1s-earlier"],
)
def test_a_moved_end_at_most_12_months_in_the_past(
    client: TestClient, keys: Keys, ids: dict[str, int], clock: Clock, end: datetime, status: int
) -> None:
    """A day later the limit is LIMIT + 1 day; the start, unchanged, is not checked again."""
    created = reserve(client, keys.buyer, [ids["site-1"]], start=LIMIT.isoformat())
    clock.now = NOW + timedelta(days=1)
    url = f"/reservations/{created['id']}"
    response = client.patch(url, headers=keys.buyer, json={"end": end.isoformat()})
    assert response.status_code == status, response.text
    if status == 422:
        error = error_of(response)
        assert error["code"] == "reservation_too_far_in_past"
        assert error["details"]["field"] == "end"
        assert client.get(url, headers=keys.buyer).json()["end"] == "2027-01-01T00:00:00+00:00"
    else:
        assert response.json()["end"] == end.isoformat()
        assert response.json()["status"] == "completed"


@pytest.mark.parametrize(
    ("end", "status"),
    [("2026-07-01T00:00:01Z", 201), ("2026-07-01T00:00:00Z", 422), ("2026-06-30T23:00:00Z", 422)],
    ids=["1s-after-start", "equal-to-start", "before-start"],
)
def test_end_after_start(
    client: TestClient, keys: Keys, ids: dict[str, int], end: str, status: int
) -> None:
    response = client.post("/reservations", headers=keys.buyer, json=body([ids["site-1"]], end=end))
    assert response.status_code == status, response.text
    if status == 422:
        error = error_of(response)
        assert error["code"] == "reservation_end_not_after_start"
        assert error["details"]["field"] == "end"


def test_patch_end_not_after_start_is_refused(
    client: TestClient, keys: Keys, ids: dict[str, int]
) -> None:
    created = reserve(client, keys.buyer, [ids["site-1"]])
    refused = client.patch(
        f"/reservations/{created['id']}", headers=keys.buyer, json={"end": START}
    )
    assert error_of(refused)["code"] == "reservation_end_not_after_start"
    unchanged = client.get(f"/reservations/{created['id']}", headers=keys.buyer).json()
    assert unchanged["end"] == "2027-01-01T00:00:00+00:00"


def test_devices_are_exclusive_across_live_reservations(
    client: TestClient, keys: Keys, ids: dict[str, int]
) -> None:
    first = reserve(client, keys.buyer, [ids["site-1"]])
    for headers in (keys.buyer, keys.other_buyer):
        refused = client.post(
            "/reservations", headers=headers, json=body([ids["site-2"], ids["site-1"]])
        )
        error = error_of(refused)
        assert error["code"] == "device_already_reserved"
        assert error["details"] == {
            "device": str(ids["site-1"]),
            "reservationId": str(first["id"]),
        }
    other = reserve(client, keys.other_buyer, [ids["site-2"]])
    added = client.patch(
        f"/reservations/{other['id']}",
        headers=keys.other_buyer,
        json={"addDevices": [ids["site-1"]]},
    )
    assert error_of(added)["code"] == "device_already_reserved"
    still = client.get(f"/reservations/{other['id']}", headers=keys.other_buyer).json()
    assert still["devices"] == [ids["site-2"]]


def _release(
    client: TestClient, keys: Keys, how: str, reservation: dict[str, Any], device_id: int
) -> None:
    url = f"/reservations/{reservation['id']}"
    if how == "delete":
        response = client.delete(url, headers=keys.buyer)
    else:
        response = client.patch(url, headers=keys.buyer, json={"removeDevices": [device_id]})
    assert response.status_code == 200, response.text


def _reservable(client: TestClient, keys: Keys, flag: str) -> list[str]:
    response = client.get("/devices", headers=keys.other_buyer, params={"reservable": flag})
    assert response.status_code == 200, response.text
    return [d["externalId"] for d in response.json()["devices"]]


@pytest.mark.parametrize("how", ["delete", "remove"], ids=["ended-by-delete", "removed-by-patch"])
@pytest.mark.parametrize(
    ("after", "ok"),
    [(TWELVE_HOURS, True), (TWELVE_HOURS - SECOND, False)],
    ids=["exactly-12h", "1s-before-12h"],
)
def test_a_released_device_is_reservable_again_12h_later(
    client: TestClient,
    keys: Keys,
    ids: dict[str, int],
    clock: Clock,
    how: str,
    after: timedelta,
    ok: bool,
) -> None:
    first = reserve(client, keys.buyer, [ids["site-1"], ids["site-2"]])
    _release(client, keys, how, first, ids["site-1"])
    clock.now = NOW + after
    expected_free = ["site-1", "site-3"] if ok else ["site-3"]
    if how == "delete":
        expected_free = ["site-1", "site-2", "site-3"] if ok else ["site-3"]
    assert _reservable(client, keys, "true") == expected_free
    assert _reservable(client, keys, "false") == sorted(
        {"site-1", "site-2", "site-3"} - set(expected_free)
    )
    response = client.post("/reservations", headers=keys.other_buyer, json=body([ids["site-1"]]))
    if ok:
        assert response.status_code == 201, response.text
        return
    error = error_of(response)
    assert error["code"] == "device_release_cooldown"
    assert error["details"]["releasedAt"] == NOW.isoformat()
    assert error["details"]["availableAt"] == (NOW + TWELVE_HOURS).isoformat()


def test_a_completed_reservation_frees_its_devices_12h_after_its_end(
    client: TestClient, keys: Keys, ids: dict[str, int], clock: Clock
) -> None:
    reserve(client, keys.buyer, [ids["site-1"]], end="2026-07-01T00:00:00Z", start=NOW.isoformat())
    end = datetime(2026, 7, 1, tzinfo=UTC)
    clock.now = end - SECOND
    assert _reservable(client, keys, "false") == ["site-1"]
    clock.now = end + TWELVE_HOURS - SECOND
    assert _reservable(client, keys, "false") == ["site-1"]
    later = body([ids["site-1"]], start=END, end="2027-02-01T00:00:00Z")
    refused = client.post("/reservations", headers=keys.other_buyer, json=later)
    assert error_of(refused)["code"] == "device_release_cooldown"
    clock.now = end + TWELVE_HOURS
    assert _reservable(client, keys, "false") == []
    assert client.post("/reservations", headers=keys.other_buyer, json=later).status_code == 201


def test_after_the_cool_down_the_period_already_covered_stays_taken(
    client: TestClient, keys: Keys, ids: dict[str, int], clock: Clock
) -> None:
    first = reserve(client, keys.buyer, [ids["site-1"]], start="2026-06-01T00:00:00Z")
    _release(client, keys, "delete", first, ids["site-1"])  # covered [06-01, NOW)
    clock.now = NOW + TWELVE_HOURS
    overlapping = body([ids["site-1"]], start="2026-06-10T00:00:00Z")
    error = error_of(client.post("/reservations", headers=keys.other_buyer, json=overlapping))
    assert error["code"] == "device_period_already_reserved"
    assert error["details"]["coveredEnd"] == NOW.isoformat()
    after = body([ids["site-1"]], start=NOW.isoformat())
    assert client.post("/reservations", headers=keys.other_buyer, json=after).status_code == 201


@pytest.mark.parametrize(
    ("frequency", "status"),
    [("monthly", 200), ("daily", 422), ("quarterly", 422)],
    ids=["same", "daily", "quarterly"],
)
def test_the_frequency_is_fixed(
    client: TestClient, keys: Keys, ids: dict[str, int], frequency: str, status: int
) -> None:
    created = reserve(client, keys.buyer, [ids["site-1"]])
    url = f"/reservations/{created['id']}"
    response = client.patch(url, headers=keys.buyer, json={"frequency": frequency})
    assert response.status_code == status, response.text
    if status == 422:
        error = error_of(response)
        assert error["code"] == "frequency_change_not_allowed"
        assert error["details"]["current"] == "monthly"
        assert error["details"]["value"] == frequency
    assert client.get(url, headers=keys.buyer).json()["frequency"] == "monthly"


@pytest.mark.parametrize(
    ("volume", "code"),
    [(1, None), (0, "target_volume_not_positive"), (-5, "target_volume_not_positive")],
    ids=["one-wh", "zero", "negative"],
)
def test_target_volume_must_be_positive(
    client: TestClient, keys: Keys, ids: dict[str, int], volume: int, code: str | None
) -> None:
    response = client.post(
        "/reservations", headers=keys.buyer, json=body([ids["site-1"]], targetVolumeWh=volume)
    )
    if code is None:
        assert response.status_code == 201, response.text
        assert response.json()["targetVolumeWh"] == 1
    else:
        assert error_of(response)["code"] == code


# --- request validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"wallet": "0x1234"}, "wallet"),
        ({"wallet": "0x52908400098527886E0F7030069857D2E4169Ee7"}, "wallet"),  # bad checksum
        ({"wallet": 12}, "wallet"),
        ({"wallet": "0x" + "0" * 40}, "wallet"),
        ({"start": "2026-07-01T00:00:00"}, "start"),
        ({"end": 1_800_000_000}, "end"),
        ({"frequency": "fortnightly"}, "frequency"),
        ({"gasTier": "ludicrous"}, "gasTier"),
        ({"targetVolumeWh": "5"}, "targetVolumeWh"),
        ({"targetVolumeWh": 2**63}, "targetVolumeWh"),
        ({"authorityToExceed": "yes"}, "authorityToExceed"),
        ({"devices": ["1"]}, "devices.0"),
        ({"colour": "red"}, "colour"),
    ],
    ids=[
        "wallet-short",
        "wallet-bad-checksum",
        "wallet-number",
        "wallet-zero",
        "start-naive",
        "end-number",
        "frequency-unknown",
        "gasTier-unknown",
        "target-string",
        "target-too-big",
        "authority-string",
        "device-id-string",
        "unknown-field",
    ],
)
def test_bad_requests_name_the_field(
    client: TestClient, keys: Keys, ids: dict[str, int], overrides: dict[str, Any], field: str
) -> None:
    response = client.post(
        "/reservations", headers=keys.buyer, json=body([ids["site-1"]], **overrides)
    )
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert [problem["field"] for problem in error["details"]["problems"]] == [field]
    assert client.get("/reservations", headers=keys.buyer).json()["reservations"] == []


def test_unknown_or_no_devices_are_refused(
    client: TestClient, keys: Keys, ids: dict[str, int]
) -> None:
    missing = max(ids.values()) + 100
    unknown = error_of(
        client.post("/reservations", headers=keys.buyer, json=body([ids["site-1"], missing]))
    )
    assert (unknown["code"], unknown["details"]) == (
        "unknown_device",
        {"field": "devices", "value": [missing]},
    )
    empty = error_of(client.post("/reservations", headers=keys.buyer, json=body([])))
    assert empty["code"] == "reservation_without_devices"
    assert client.get("/reservations", headers=keys.buyer).json()["reservations"] == []


def test_patch_device_changes_must_make_sense(
    client: TestClient, keys: Keys, ids: dict[str, int]
) -> None:
    created = reserve(client, keys.buyer, [ids["site-1"]])
    url = f"/reservations/{created['id']}"

    def patch(payload: dict[str, Any]) -> str:
        return str(error_of(client.patch(url, headers=keys.buyer, json=payload))["code"])

    assert patch({"removeDevices": [ids["site-2"]]}) == "device_not_in_reservation"
    both = {"addDevices": [ids["site-2"]], "removeDevices": [ids["site-2"]]}
    assert patch(both) == "device_added_and_removed"
    assert patch({"removeDevices": [ids["site-1"]]}) == "reservation_without_devices"
    assert patch({"addDevices": [max(ids.values()) + 100]}) == "unknown_device"
    assert patch({"start": START}) == "invalid_request"  # the start never moves
    assert client.get(url, headers=keys.buyer).json() == created


# --- access -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "viewer", "issuer"])
def test_only_buyers_create(client: TestClient, keys: Keys, ids: dict[str, int], role: str) -> None:
    response = client.post("/reservations", headers=getattr(keys, role), json=body([ids["site-1"]]))
    assert error_of(response, 403)["code"] == "forbidden"


def test_every_endpoint_needs_a_key(client: TestClient) -> None:
    for method, url in (("GET", "/reservations"), ("GET", "/reservations/1")):
        assert client.request(method, url).status_code == 401
    assert client.post("/reservations", json={}).status_code == 401
    assert client.delete("/reservations/1").status_code == 401


def test_another_buyer_sees_nothing_of_a_reservation(
    client: TestClient, keys: Keys, ids: dict[str, int]
) -> None:
    mine = reserve(client, keys.buyer, [ids["site-1"]])
    url = f"/reservations/{mine['id']}"
    missing = f"/reservations/{mine['id'] + 1000}"
    for method, payload in (("GET", None), ("PATCH", {"targetVolumeWh": 5}), ("DELETE", None)):
        theirs = client.request(method, url, headers=keys.other_buyer, json=payload)
        nothing = client.request(method, missing, headers=keys.other_buyer, json=payload)
        assert theirs.status_code == nothing.status_code == 404
        assert error_of(theirs, 404)["code"] == error_of(nothing, 404)["code"]
        assert error_of(theirs, 404)["code"] == "reservation_not_found"
    assert client.get("/reservations", headers=keys.other_buyer).json()["reservations"] == []
    assert client.get(url, headers=keys.buyer).json() == mine


def test_issuers_and_viewers_read_all_but_change_nothing(
    client: TestClient, keys: Keys, ids: dict[str, int]
) -> None:
    mine = reserve(client, keys.buyer, [ids["site-1"]])
    theirs = reserve(client, keys.other_buyer, [ids["site-2"]])
    for headers in (keys.issuer, keys.viewer):
        listed = client.get("/reservations", headers=headers).json()["reservations"]
        assert [r["id"] for r in listed] == [mine["id"], theirs["id"]]
        assert client.get(f"/reservations/{theirs['id']}", headers=headers).json() == theirs
        url = f"/reservations/{mine['id']}"
        patched = client.patch(url, headers=headers, json={"targetVolumeWh": 5})
        assert error_of(patched, 403)["code"] == "forbidden"
        assert error_of(client.delete(url, headers=headers), 403)["code"] == "forbidden"
    own = client.get("/reservations", headers=keys.buyer).json()["reservations"]
    assert [r["id"] for r in own] == [mine["id"]]
    assert client.get(f"/reservations/{mine['id']}", headers=keys.buyer).json() == mine


def test_device_owners_do_not_read_reservations(
    client: TestClient, keys: Keys, ids: dict[str, int]
) -> None:
    mine = reserve(client, keys.buyer, [ids["site-1"]])
    assert error_of(client.get("/reservations", headers=keys.owner), 403)["code"] == "forbidden"
    one = client.get(f"/reservations/{mine['id']}", headers=keys.owner)
    assert error_of(one, 403)["code"] == "forbidden"


def test_out_of_range_ids_are_422_not_500(client: TestClient, keys: Keys) -> None:
    for url in ("/reservations/99999999999", "/reservations/0", "/reservations/x"):
        assert client.get(url, headers=keys.viewer).status_code == 422


def test_pagination(client: TestClient, keys: Keys, ids: dict[str, int]) -> None:
    made = [
        reserve(client, keys.buyer, [ids[name]])["id"] for name in ("site-1", "site-2", "site-3")
    ]
    page = client.get("/reservations", headers=keys.buyer, params={"limit": 2, "offset": 1}).json()
    assert [r["id"] for r in page["reservations"]] == made[1:]


# --- volumes ------------------------------------------------------------------------------


def _history(
    client: TestClient, keys: Keys, external_id: str, reads: list[tuple[str, str, int]]
) -> None:
    payload = {
        "type": "history",
        "unit": "Wh",
        "reads": [{"starttimestamp": s, "endtimestamp": e, "value": v} for s, e, v in reads],
    }
    response = client.post(f"/meter-reads/{external_id}", headers=keys.owner, json=payload)
    assert response.status_code == 200, response.text
    assert {r["status"] for r in response.json()["reads"]} == {"accepted"}, response.text


def test_requested_volume_is_the_energy_of_its_devices_in_its_period(
    client: TestClient, keys: Keys, ids: dict[str, int], clock: Clock
) -> None:
    created = reserve(
        client, keys.buyer, [ids["site-1"], ids["site-2"]], start="2026-06-01T00:00:00Z"
    )
    url = f"/reservations/{created['id']}"
    _history(
        client,
        keys,
        "site-1",
        [
            ("2026-05-31T23:00:00Z", "2026-06-01T00:00:00Z", 9_000),  # before start
            ("2026-06-01T08:00:00Z", "2026-06-01T09:00:00Z", 10_000),
            ("2026-06-01T09:00:00Z", "2026-06-01T10:00:00Z", 11_000),
        ],
    )
    _history(client, keys, "site-2", [("2026-06-01T08:00:00Z", "2026-06-01T09:00:00Z", 5_000)])
    _history(client, keys, "site-3", [("2026-06-01T08:00:00Z", "2026-06-01T09:00:00Z", 7_000)])
    volumes = client.get(url, headers=keys.buyer).json()["volumes"]
    assert volumes == {"issuedWh": 0, "requestedWh": 26_000, "failedWh": 0, "leftoverWh": 0}

    # site-2 leaves at NOW: what it made before still counts, what it makes after does not
    client.patch(url, headers=keys.buyer, json={"removeDevices": [ids["site-2"]]})
    clock.now = NOW + timedelta(days=2)
    _history(client, keys, "site-2", [("2026-06-16T08:00:00Z", "2026-06-16T09:00:00Z", 4_000)])
    _history(client, keys, "site-1", [("2026-06-16T08:00:00Z", "2026-06-16T09:00:00Z", 3_000)])
    listed = client.get("/reservations", headers=keys.viewer).json()["reservations"]
    assert listed[0]["volumes"]["requestedWh"] == 29_000


def test_an_ended_reservation_requests_nothing_after_its_end(
    client: TestClient, keys: Keys, ids: dict[str, int], clock: Clock
) -> None:
    created = reserve(client, keys.buyer, [ids["site-1"]], start="2026-06-01T00:00:00Z")
    _history(client, keys, "site-1", [("2026-06-01T08:00:00Z", "2026-06-01T09:00:00Z", 10_000)])
    client.delete(f"/reservations/{created['id']}", headers=keys.buyer)
    clock.now = NOW + timedelta(days=2)
    _history(client, keys, "site-1", [("2026-06-16T08:00:00Z", "2026-06-16T09:00:00Z", 3_000)])
    got = client.get(f"/reservations/{created['id']}", headers=keys.buyer).json()
    assert got["volumes"]["requestedWh"] == 10_000


def test_an_interval_across_the_start_or_a_release_counts_its_share_in_the_period(
    client: TestClient, keys: Keys, ids: dict[str, int], clock: Clock
) -> None:
    """Shared in proportion to time, by largest remainder (as between windows): 10_001 Wh
    over 23:30-01:00 across the start gives 6_667 Wh to its 60 min inside (6_667.33; the
    30 min before has the larger remainder); 4_001 Wh over two hours across site-2's
    release gives 2_001 Wh to the hour before it (equal remainders: the earlier piece)."""
    created = reserve(
        client, keys.buyer, [ids["site-1"], ids["site-2"]], start="2026-06-01T00:00:00Z"
    )
    url = f"/reservations/{created['id']}"
    _history(
        client,
        keys,
        "site-1",
        [
            ("2026-05-31T22:00:00Z", "2026-05-31T23:30:00Z", 9_000),  # wholly before
            ("2026-05-31T23:30:00Z", "2026-06-01T01:00:00Z", 10_001),  # across the start
        ],
    )
    assert client.get(url, headers=keys.buyer).json()["volumes"]["requestedWh"] == 6_667

    client.patch(url, headers=keys.buyer, json={"removeDevices": [ids["site-2"]]})  # at NOW
    clock.now = NOW + timedelta(days=2)
    across_release = (NOW - timedelta(hours=1)).isoformat(), (NOW + timedelta(hours=1)).isoformat()
    _history(client, keys, "site-2", [(*across_release, 4_001)])
    assert client.get(url, headers=keys.buyer).json()["volumes"]["requestedWh"] == 6_667 + 2_001


# --- reservable filter --------------------------------------------------------------------


def test_reservable_filter_combines_with_the_others(
    client: TestClient, keys: Keys, ids: dict[str, int]
) -> None:
    client.post("/devices", headers=keys.other_owner, json=device("far", countryCode="NGA"))
    reserve(client, keys.buyer, [ids["site-2"]])
    params = {"reservable": "true", "countryCode": "KEN"}
    free = client.get("/devices", headers=keys.buyer, params=params).json()["devices"]
    assert [d["externalId"] for d in free] == ["site-1", "site-3"]
    everything = client.get("/devices", headers=keys.buyer).json()["devices"]
    assert [d["externalId"] for d in everything] == ["site-1", "site-2", "site-3", "far"]
    busy = client.get("/devices", headers=keys.owner, params={"reservable": "false"}).json()
    assert [d["externalId"] for d in busy["devices"]] == ["site-2"]


SQLITE_DEFAULT_VARIABLE_LIMIT = 32_766  # SQLITE_MAX_VARIABLE_NUMBER of a stock build
PSYCOPG_PARAMETER_LIMIT = 65_535  # the PostgreSQL protocol's


@pytest.fixture
def parameter_limit(engine: Engine) -> Iterator[int]:
    """How many parameters one statement may bind. SQLite builds differ (Debian's takes
    250,000), so every SQLite connection is held to the stock limit for the test."""
    if engine.dialect.name != "sqlite":
        yield PSYCOPG_PARAMETER_LIMIT
        return

    def stock_limit(connection: sqlite3.Connection, _record: object) -> None:
        connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, SQLITE_DEFAULT_VARIABLE_LIMIT)

    event.listen(engine, "connect", stock_limit)
    engine.dispose()  # pooled connections reconnect with the limit
    yield SQLITE_DEFAULT_VARIABLE_LIMIT
    event.remove(engine, "connect", stock_limit)
    engine.dispose()


def test_the_reservable_filter_holds_with_more_busy_devices_than_bound_parameters(
    client: TestClient,
    keys: Keys,
    ids: dict[str, int],
    sessions: sessionmaker[Session],
    parameter_limit: int,
) -> None:
    """One reservation holds one device more than the backend binds in a statement: the
    busy devices never travel as parameters, so the filter still answers (no 500)."""
    held = reserve(client, keys.buyer, [ids["site-1"]])
    with sessions.begin() as session:
        busy = parameter_limit + 1
        site_1 = session.get_one(DeviceRow, ids["site-1"])
        columns = {
            name: getattr(site_1, name)
            for name in (
                "organization_id",
                "country_code",
                "fuel_code",
                "device_type_code",
                "capacity_w",
                "commissioning_date",
                "grid_interconnection",
                "off_taker",
                "yield_kwh_per_kw_year",
                "created_at",
                "updated_at",
            )
        }
        session.execute(
            insert(DeviceRow), [{**columns, "external_id": f"bulk-{n}"} for n in range(busy)]
        )
        bookings = select(
            literal(held["id"]), DeviceRow.id, literal(NOW, DeviceRow.created_at.type)
        ).where(DeviceRow.external_id.like("bulk-%"))
        session.execute(
            insert(store.ReservationDeviceRow).from_select(
                ["reservation_id", "device_id", "added_at"], bookings
            )
        )
    assert _reservable(client, keys, "true") == ["site-2", "site-3"]
    page = client.get(
        "/devices", headers=keys.other_buyer, params={"reservable": "false", "limit": 1000}
    )
    assert page.status_code == 200, page.text
    found = [d["externalId"] for d in page.json()["devices"]]
    assert len(found) == 1000
    assert found[0] == "site-1"
    assert all(external_id.startswith("bulk-") for external_id in found[1:])


# --- concurrency --------------------------------------------------------------------------


def test_two_buyers_racing_for_one_device_never_both_win(
    client: TestClient,
    keys: Keys,
    ids: dict[str, int],
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first buyer pauses after reading the bookings, long enough for the second to
    read them too if nothing locked the device; with the lock the second waits, then sees
    the first one's booking."""
    read_bookings = store.booking_records
    first = threading.Event()

    def slow_read(**kwargs: Any) -> Any:
        found = read_bookings(**kwargs)
        if not first.is_set():
            first.set()
            time.sleep(0.5)
        return found

    monkeypatch.setattr(service, "booking_records", slow_read)
    buyers = [
        authenticate(sessions=sessions, authorization=headers["Authorization"])
        for headers in (keys.buyer, keys.other_buyer)
    ]
    new = service.NewReservation(
        devices=frozenset({ids["site-1"]}),
        frequency=Frequency.MONTHLY,
        start=datetime(2026, 7, 1, tzinfo=UTC),
        end=datetime(2027, 1, 1, tzinfo=UTC),
        target_volume_wh=1_000,
        authority_to_exceed=False,
        wallet=WALLET,
    )
    outcomes: list[str] = []

    def attempt(index: int) -> Callable[[], None]:
        def run() -> None:
            if index == 1:
                first.wait(5)
            try:
                service.create_reservation(
                    sessions=sessions, principal=buyers[index], new=new, now=NOW
                )
                outcomes.append("won")
            except GranularError as error:
                outcomes.append(error.code)

        return run

    threads = [threading.Thread(target=attempt(i)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["device_already_reserved", "won"]
    listed = client.get("/reservations", headers=keys.viewer).json()["reservations"]
    assert [r["devices"] for r in listed] == [[ids["site-1"]]]


# --- consumption devices ------------------------------------------------------------------


@pytest.fixture
def meters(client: TestClient, keys: Keys, sessions: sessionmaker[Session]) -> dict[str, int]:
    """Consumption meters: two of the buyer's organization ("Buyer Ltd", registered by a
    device owner of it), one of another organization; and a production device of the
    buyer's organization."""

    def owner_of(organization: str) -> dict[str, str]:
        created = create_api_key(
            sessions=sessions, organization=organization, role="device_owner", label=None, now=NOW
        )
        return {"Authorization": f"Bearer {created.key}"}

    buyer_owner = owner_of("Buyer Ltd")
    found: dict[str, int] = {}
    for name, headers, kind in (
        ("meter-1", buyer_owner, "consumption"),
        ("meter-2", buyer_owner, "consumption"),
        ("foreign-meter", owner_of("Other Buyer"), "consumption"),
        ("buyer-plant", buyer_owner, "production"),
    ):
        created = client.post("/devices", headers=headers, json=device(name, kind=kind))
        assert created.status_code == 201, created.text
        found[name] = created.json()["device"]["id"]
    return found


def test_consumption_devices_are_booked_and_shown_apart(
    client: TestClient, keys: Keys, ids: dict[str, int], meters: dict[str, int]
) -> None:
    created = reserve(client, keys.buyer, [ids["site-1"]], consumptionDevices=[meters["meter-1"]])
    assert created["devices"] == [ids["site-1"]]
    assert created["consumptionDevices"] == [meters["meter-1"]]
    kinds = {h["deviceId"]: h["kind"] for h in created["deviceHistory"]}
    assert kinds == {ids["site-1"]: "production", meters["meter-1"]: "consumption"}
    url = f"/reservations/{created['id']}"
    swapped = client.patch(
        url,
        headers=keys.buyer,
        json={
            "addConsumptionDevices": [meters["meter-2"]],
            "removeConsumptionDevices": [meters["meter-1"]],
        },
    )
    assert swapped.status_code == 200, swapped.text
    assert swapped.json()["consumptionDevices"] == [meters["meter-2"]]
    assert swapped.json()["devices"] == [ids["site-1"]]
    got = client.get(url, headers=keys.buyer).json()
    assert got["consumptionDevices"] == [meters["meter-2"]]


def test_consumption_devices_are_exclusive_and_released_like_any_booking(
    client: TestClient, keys: Keys, ids: dict[str, int], meters: dict[str, int], clock: Clock
) -> None:
    first = reserve(client, keys.buyer, [ids["site-1"]], consumptionDevices=[meters["meter-1"]])
    taken = client.post(
        "/reservations",
        headers=keys.buyer,
        json=body([ids["site-2"]], consumptionDevices=[meters["meter-1"]]),
    )
    error = error_of(taken)
    assert error["code"] == "device_already_reserved"
    assert error["details"]["device"] == str(meters["meter-1"])
    removed = client.patch(
        f"/reservations/{first['id']}",
        headers=keys.buyer,
        json={"removeConsumptionDevices": [meters["meter-1"]]},
    )
    assert removed.status_code == 200, removed.text
    later = {"start": "2027-02-01T00:00:00Z", "end": "2027-03-01T00:00:00Z"}
    clock.now = NOW + TWELVE_HOURS - SECOND
    soon = client.post(
        "/reservations",
        headers=keys.buyer,
        json=body([ids["site-2"]], consumptionDevices=[meters["meter-1"]], **later),
    )
    assert error_of(soon)["code"] == "device_release_cooldown"
    clock.now = NOW + TWELVE_HOURS
    reserve(client, keys.buyer, [ids["site-2"]], consumptionDevices=[meters["meter-1"]], **later)


@pytest.mark.parametrize(
    ("field", "device", "code", "request_kind"),
    [
        ("devices", "meter-2", "reservation_device_kind_mismatch", "post"),
        ("consumptionDevices", "site-2", "reservation_device_kind_mismatch", "post"),
        ("consumptionDevices", "buyer-plant", "reservation_device_kind_mismatch", "post"),
        ("consumptionDevices", "foreign-meter", "consumption_device_not_owned", "post"),
        ("consumptionDevices", "missing", "unknown_device", "post"),
        ("addDevices", "meter-2", "reservation_device_kind_mismatch", "patch"),
        ("addConsumptionDevices", "site-2", "reservation_device_kind_mismatch", "patch"),
        ("addConsumptionDevices", "foreign-meter", "consumption_device_not_owned", "patch"),
        ("addConsumptionDevices", "missing", "unknown_device", "patch"),
        ("removeConsumptionDevices", "meter-2", "device_not_in_reservation", "patch"),
        ("removeConsumptionDevices", "site-1", "device_not_in_reservation", "patch"),
    ],
    ids=[
        "meter-as-production",
        "plant-as-consumption",
        "own-plant-as-consumption",
        "foreign-meter",
        "unknown-meter",
        "patch-meter-as-production",
        "patch-plant-as-consumption",
        "patch-foreign-meter",
        "patch-unknown-meter",
        "patch-remove-meter-not-held",
        "patch-remove-plant-as-consumption",
    ],
)
def test_wrong_devices_are_refused_naming_the_field_and_ids(
    client: TestClient,
    keys: Keys,
    ids: dict[str, int],
    meters: dict[str, int],
    field: str,
    device: str,
    code: str,
    request_kind: str,
) -> None:
    every = {**ids, **meters, "missing": max([*ids.values(), *meters.values()]) + 100}
    offending = every[device]
    if request_kind == "post":
        payload = body([ids["site-1"]], consumptionDevices=[meters["meter-1"]])
        if field == "devices":
            payload["devices"] = [ids["site-1"], offending]
        else:
            payload["consumptionDevices"] = [meters["meter-1"], offending]
        response = client.post("/reservations", headers=keys.buyer, json=payload)
        assert client.get("/reservations", headers=keys.buyer).json()["reservations"] == []
    else:
        created = reserve(
            client, keys.buyer, [ids["site-1"]], consumptionDevices=[meters["meter-1"]]
        )
        response = client.patch(
            f"/reservations/{created['id']}", headers=keys.buyer, json={field: [offending]}
        )
        got = client.get(f"/reservations/{created['id']}", headers=keys.buyer).json()
        assert got == created
    error = error_of(response)
    assert error["code"] == code
    assert error["details"]["field"] == field
    assert error["details"]["value"] == [offending]


def test_a_reservation_needs_a_production_device(
    client: TestClient, keys: Keys, ids: dict[str, int], meters: dict[str, int]
) -> None:
    only_meters = client.post(
        "/reservations", headers=keys.buyer, json=body([], consumptionDevices=[meters["meter-1"]])
    )
    assert error_of(only_meters)["code"] == "reservation_without_devices"
    created = reserve(client, keys.buyer, [ids["site-1"]], consumptionDevices=[meters["meter-1"]])
    emptied = client.patch(
        f"/reservations/{created['id']}",
        headers=keys.buyer,
        json={"removeDevices": [ids["site-1"]]},
    )
    assert error_of(emptied)["code"] == "reservation_without_devices"


def test_requested_volume_counts_production_only(
    client: TestClient,
    keys: Keys,
    ids: dict[str, int],
    meters: dict[str, int],
    sessions: sessionmaker[Session],
) -> None:
    """Consumption energy is not energy requested for issuance."""
    created = reserve(
        client,
        keys.buyer,
        [ids["site-1"]],
        consumptionDevices=[meters["meter-1"]],
        start="2026-06-01T00:00:00Z",
    )
    hour = {"starttimestamp": "2026-06-01T08:00:00Z", "endtimestamp": "2026-06-01T09:00:00Z"}
    sent = client.post(
        "/meter-reads/site-1",
        headers=keys.owner,
        json={"type": "history", "reads": [{**hour, "value": 700}]},
    )
    assert sent.json()["summary"]["accepted"] == 1
    meter_owner = create_api_key(
        sessions=sessions, organization="Buyer Ltd", role="device_owner", label=None, now=NOW
    )
    consumed = client.post(
        "/meter-reads/meter-1",
        headers={"Authorization": f"Bearer {meter_owner.key}"},
        json={"type": "history", "reads": [{**hour, "value": 300}]},
    )
    assert consumed.json()["summary"]["accepted"] == 1
    got = client.get(f"/reservations/{created['id']}", headers=keys.buyer).json()
    assert got["volumes"]["requestedWh"] == 700


def test_a_reservation_the_matching_job_has_seen_shows_its_matching_state(
    client: TestClient, keys: Keys, ids: dict[str, int], sessions: sessionmaker[Session]
) -> None:
    """The `matching` field is part of the typed answer: it once made GET a 500."""
    from granular.adapters.db import matching as matching_store

    created = reserve(client, keys.buyer, [ids["site-1"]])
    assert "matching" not in client.get(f"/reservations/{created['id']}", headers=keys.buyer).json()
    with sessions.begin() as session:
        matching_store.set_status(
            session=session,
            reservation_id=created["id"],
            state="waiting_for_operator",
            detail="the buyer's wallet has not approved the issuer as operator",
            now=NOW,
        )
    fetched = client.get(f"/reservations/{created['id']}", headers=keys.buyer)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["matching"] == {
        "state": "waiting_for_operator",
        "detail": "the buyer's wallet has not approved the issuer as operator",
        "updatedAt": NOW.isoformat(),
        "claimedWh": 0,
        "consumedWh": 0,
        "producedWh": 0,
        "deficitWh": 0,
        "surplusWh": 0,
        "score": None,
    }
