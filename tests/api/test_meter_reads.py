"""POST/GET /meter-reads/{externalId}: every read accepted, warned or rejected with its rule."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.readings import EnergyIntervalRow, ReadSubmissionRow
from granular.api.schemas_fleet import ReadsPublic
from granular.domain.energy import DeviceProfile, MaxEnergyPolicy, yearly_yield_bound_wh
from tests.api.conftest import Keys
from tests.api.test_devices import device


@pytest.fixture
def site(client: TestClient, keys: Keys) -> str:
    # 50 kW, commissioned 2024-03-01, yield 1800 kWh/kW/year: the D-REC bound for one hour
    # in mid-2026 is about 12.2 kWh, the physical bound 50 kWh.
    response = client.post("/devices", headers=keys.owner, json=device("site-1"))
    assert response.status_code == 201
    return "site-1"


def post(
    client: TestClient,
    keys: Keys,
    body: dict[str, Any],
    external_id: str = "site-1",
    status_code: int = 200,
) -> Any:
    response = client.post(f"/meter-reads/{external_id}", headers=keys.owner, json=body)
    assert response.status_code == status_code, response.text
    return response.json()


def hour(h: int) -> str:
    return f"2026-06-01T{h:02d}:00:00Z"


def statuses(answer: Any) -> list[str]:
    return [read["status"] for read in answer["reads"]]


def test_history_reads_become_intervals(client: TestClient, keys: Keys, site: str) -> None:
    answer = post(
        client,
        keys,
        {
            "type": "history",
            "unit": "kWh",
            "reads": [
                {"starttimestamp": hour(8), "endtimestamp": hour(9), "value": 10.5},
                {"starttimestamp": hour(9), "endtimestamp": hour(10), "value": "11.25"},
            ],
        },
    )
    assert statuses(answer) == ["accepted", "accepted"]
    assert answer["reads"][0]["interval"] == {
        "start": "2026-06-01T08:00:00+00:00",
        "end": "2026-06-01T09:00:00+00:00",
        "energyWh": 10_500,
    }
    got = client.get("/meter-reads/site-1", headers=keys.owner, params={"start": hour(0)}).json()
    assert got["totalWh"] == 21_750
    assert [i["energyWh"] for i in got["intervals"]] == [10_500, 11_250]


def test_delta_first_read_sets_the_baseline(client: TestClient, keys: Keys, site: str) -> None:
    answer = post(
        client,
        keys,
        {
            "type": "delta",
            "reads": [
                {"endtimestamp": hour(8), "value": 999},
                {"endtimestamp": hour(9), "value": 4000},
            ],
        },
    )
    assert statuses(answer) == ["accepted", "accepted"]
    assert answer["reads"][0]["baselineOnly"] is True
    assert answer["reads"][0]["interval"] is None
    ReadsPublic.model_validate(answer)
    assert answer["reads"][1]["interval"]["energyWh"] == 4000


def test_reads_of_one_request_are_checked_against_each_other(
    client: TestClient, keys: Keys, site: str
) -> None:
    answer = post(
        client,
        keys,
        {
            "type": "aggregate",
            "reads": [
                {"endtimestamp": hour(8), "value": 100_000},
                {"endtimestamp": hour(9), "value": 105_000},
                {"endtimestamp": hour(10), "value": 104_000},  # below the read just before
                {"endtimestamp": hour(11), "value": 110_000},
            ],
        },
    )
    assert statuses(answer) == ["accepted", "accepted", "rejected", "accepted"]
    error = answer["reads"][2]["error"]
    assert error["code"] == "aggregate_decreased"
    assert "104000" in error["message"] and "105000" in error["message"]
    assert answer["reads"][3]["interval"]["energyWh"] == 5_000  # from 105,000, not 104,000


def test_resubmitting_is_idempotent(
    client: TestClient, keys: Keys, site: str, sessions: sessionmaker[Session]
) -> None:
    body = {
        "type": "delta",
        "reads": [{"endtimestamp": hour(h), "value": 3000} for h in range(6, 12)],
    }
    post(client, keys, body)
    again = post(client, keys, body)
    assert statuses(again) == ["duplicate"] * 6
    got = client.get("/meter-reads/site-1", headers=keys.owner).json()
    assert got["totalWh"] == 15_000
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(EnergyIntervalRow)) == 5
        payloads = session.scalars(select(ReadSubmissionRow.payload)).all()
    assert payloads == [body, body]  # both requests kept as received


def test_a_changed_value_for_a_stored_read_is_a_conflict(
    client: TestClient, keys: Keys, site: str
) -> None:
    first = {"starttimestamp": hour(8), "endtimestamp": hour(9), "value": 5000}
    post(client, keys, {"type": "history", "reads": [first]})
    answer = post(
        client, keys, {"type": "history", "reads": [{**first, "value": 5001}]}, status_code=422
    )
    assert answer["reads"][0]["error"]["code"] == "read_conflict"


@pytest.mark.parametrize(
    ("value_wh", "status"),
    [(40_000, "accepted"), (50_000, "accepted"), (50_001, "rejected")],
    ids=["sunny-hour-80-percent", "at-physical", "over-physical"],
)
def test_physical_bound_per_interval_is_named_with_its_numbers(
    client: TestClient, keys: Keys, site: str, value_wh: int, status: str
) -> None:
    """A noon hour at 80 % of nameplate is normal solar data: the yield rule, measured over
    the trailing year, does not reject it; the physical bound (50 kWh in an hour) does."""
    answer = post(
        client,
        keys,
        {
            "type": "history",
            "reads": [{"starttimestamp": hour(8), "endtimestamp": hour(9), "value": value_wh}],
        },
        status_code=422 if status == "rejected" else 200,
    )
    assert statuses(answer) == [status]
    if status == "rejected":
        error = answer["reads"][0]["error"]
        assert error["code"] == "energy_exceeds_bound"
        assert error["details"]["rule"] == "physical"
        assert (error["details"]["energyWh"], error["details"]["boundWh"]) == (50_001, 50_000)


SITE = DeviceProfile(
    "site-1", 50_000, datetime(2024, 3, 1, tzinfo=UTC), yield_kwh_per_kw_year=Decimal(1800)
)


def test_yield_rule_over_the_stored_trailing_year_at_the_bound_and_1wh_over(
    client: TestClient, keys: Keys, site: str
) -> None:
    """The year ending 2026-06-01 09:00: a 2-day interval straddling its start counts half
    (1000 of 2000 Wh), a stored interval inside it counts whole, then one hour is checked
    in a later request, so the stored year comes from the database."""
    end = datetime.fromisoformat(hour(9))
    bound_wh = yearly_yield_bound_wh(SITE, end, MaxEnergyPolicy())
    assert 100_000_000 < bound_wh < 108_000_000  # 50 kW × 1800 × 1.2 × 0.995^2.25
    inside_wh = bound_wh - 1000 - 40_000
    stored = post(
        client,
        keys,
        {
            "type": "history",
            "reads": [
                {
                    "starttimestamp": "2025-05-31T09:00:00Z",
                    "endtimestamp": "2025-06-02T09:00:00Z",
                    "value": 2000,
                },
                {
                    "starttimestamp": "2025-06-02T09:00:00Z",
                    "endtimestamp": hour(8),
                    "value": inside_wh,
                },
            ],
        },
    )
    assert statuses(stored) == ["accepted", "accepted"]
    over = post(
        client,
        keys,
        {
            "type": "history",
            "reads": [{"starttimestamp": hour(8), "endtimestamp": hour(9), "value": 40_001}],
        },
        status_code=422,
    )
    error = over["reads"][0]["error"]
    assert error["code"] == "energy_exceeds_bound"
    assert error["details"] == {
        "device": "site-1",
        "energyWh": bound_wh + 1,
        "boundWh": bound_wh,
        "rule": "drec",
        "windowStart": "2025-06-01T09:00:00+00:00",
        "windowEnd": "2026-06-01T09:00:00+00:00",
        "intervalWh": 40_001,
    }
    at = post(
        client,
        keys,
        {
            "type": "history",
            "reads": [{"starttimestamp": hour(8), "endtimestamp": hour(9), "value": 40_000}],
        },
    )
    assert statuses(at) == ["accepted"]


def test_a_consumption_meter_is_held_to_its_connection_capacity_only(
    client: TestClient, keys: Keys
) -> None:
    body = device("meter-1", kind="consumption", capacity=1000)
    assert client.post("/devices", headers=keys.owner, json=body).status_code == 201
    # A year at 1 kW: 8.76 MWh, over a 1 kW plant's yield bound (about 2.1 MWh).
    year = {"starttimestamp": "2025-06-01T00:00:00Z", "endtimestamp": hour(0), "value": 8_760_000}
    answer = post(client, keys, {"type": "history", "reads": [year]}, "meter-1")
    assert statuses(answer) == ["accepted"]
    over = {"starttimestamp": hour(0), "endtimestamp": hour(1), "value": 1001}
    error = post(client, keys, {"type": "history", "reads": [over]}, "meter-1", 422)["reads"][0]
    assert error["error"]["details"]["rule"] == "physical"


def test_a_delta_right_after_history_runs_from_the_history_end(
    client: TestClient, keys: Keys, site: str
) -> None:
    """Issue 10: the delta's energy is no longer dropped as a baseline."""
    history = {"starttimestamp": hour(7), "endtimestamp": hour(8), "value": 3000}
    post(client, keys, {"type": "history", "reads": [history]})
    answer = post(
        client, keys, {"type": "delta", "reads": [{"endtimestamp": hour(9), "value": 4000}]}
    )
    assert answer["reads"][0]["interval"] == {
        "start": "2026-06-01T08:00:00+00:00",
        "end": "2026-06-01T09:00:00+00:00",
        "energyWh": 4000,
    }
    aggregate = post(
        client,
        keys,
        {
            "type": "history",
            "reads": [{"starttimestamp": hour(9), "endtimestamp": hour(10), "value": 1}],
        },
    )
    assert statuses(aggregate) == ["accepted"]
    total = post(
        client, keys, {"type": "aggregate", "reads": [{"endtimestamp": hour(11), "value": 500}]}
    )
    assert total["reads"][0].get("baselineOnly") is True
    got = client.get("/meter-reads/site-1", headers=keys.owner, params={"start": hour(0)}).json()
    assert got["totalWh"] == 7001


def test_old_history_is_accepted_with_a_warning(client: TestClient, keys: Keys) -> None:
    client.post("/devices", headers=keys.owner, json=device("old", commissioningDate="2020-01-01"))
    answer = post(
        client,
        keys,
        {
            "type": "history",
            "reads": [
                {
                    "starttimestamp": "2023-01-01T00:00:00Z",
                    "endtimestamp": "2023-01-01T01:00:00Z",
                    "value": 1000,
                }
            ],
        },
        external_id="old",
    )
    assert statuses(answer) == ["acceptedWithWarning"]
    ReadsPublic.model_validate(answer)  # the documented model, extra keys forbidden
    assert answer["summary"] == {
        "accepted": 0,
        "acceptedWithWarning": 1,
        "duplicate": 0,
        "rejected": 0,
    }
    assert answer["reads"][0]["warnings"][0]["code"] == "history_older_than_3_years"


@pytest.mark.parametrize(
    ("read", "code"),
    [
        ({"endtimestamp": "2026-06-01T09:00:00", "value": 1}, "naive_timestamp"),
        ({"endtimestamp": hour(9), "value": -1}, "negative_value"),
        ({"endtimestamp": hour(9), "value": "0.5"}, "fractional_wh"),
        ({"endtimestamp": "2026-07-01T00:00:00Z", "value": 1}, "read_in_future"),
    ],
    ids=["naive", "negative", "fraction-of-wh", "future"],
)
def test_bad_reads_are_rejected_one_by_one(
    client: TestClient, keys: Keys, site: str, read: dict[str, Any], code: str
) -> None:
    good = {"endtimestamp": hour(8), "value": 1}
    answer = post(client, keys, {"type": "delta", "reads": [good, read]})
    assert statuses(answer) == ["accepted", "rejected"]
    assert answer["reads"][1]["error"]["code"] == code


def test_a_request_whose_reads_are_all_rejected_is_422_with_each_result(
    client: TestClient, keys: Keys, site: str
) -> None:
    """A client that checks only the status must not take "nothing stored" for success;
    the per-read results stay in the body beside the error."""
    bad = {"endtimestamp": "2026-07-01T00:00:00Z", "value": 1}  # in the future
    answer = post(client, keys, {"type": "delta", "reads": [bad, bad]}, status_code=422)
    assert answer["error"]["code"] == "all_reads_rejected"
    assert answer["summary"]["rejected"] == 2
    assert statuses(answer) == ["rejected", "rejected"]
    error = answer["reads"][0]["error"]
    assert error["code"] == "read_in_future"
    assert error["details"]["field"] == "endtimestamp"  # the request's name, not `end`
    ReadsPublic.model_validate({k: v for k, v in answer.items() if k != "error"})
    mixed = post(
        client, keys, {"type": "delta", "reads": [{"endtimestamp": hour(8), "value": 1}, bad]}
    )
    assert statuses(mixed) == ["accepted", "rejected"]
    assert "error" not in mixed
    ReadsPublic.model_validate(mixed)


def test_error_details_name_the_request_fields_in_camel_case(
    client: TestClient, keys: Keys, site: str
) -> None:
    """Keys of details are camelCase (a snake_case key coming back fails here), and
    `field` names the request's field."""
    history = {"starttimestamp": hour(9), "endtimestamp": hour(8), "value": 1}
    answer = post(client, keys, {"type": "history", "reads": [history]}, status_code=422)
    assert answer["reads"][0]["error"]["details"]["field"] == "starttimestamp"
    post(client, keys, {"type": "delta", "reads": [{"endtimestamp": hour(8), "value": 1}]})
    switch = post(
        client,
        keys,
        {"type": "aggregate", "reads": [{"endtimestamp": hour(9), "value": 1}]},
        status_code=422,
    )
    details = switch["reads"][0]["error"]["details"]
    assert details["previousKind"] == "delta"
    for read in answer["reads"] + switch["reads"]:
        assert not [key for key in read["error"]["details"] if "_" in key]


def test_malformed_json_names_the_body_never_a_character_offset(
    client: TestClient, keys: Keys, site: str
) -> None:
    response = client.post(
        "/meter-reads/site-1",
        headers={**keys.owner, "Content-Type": "application/json"},
        content=b'{"type": "delta", "reads": [}',
    )
    assert response.status_code == 400
    (problem,) = response.json()["error"]["details"]["problems"]
    assert problem["field"] == "body"
    assert isinstance(problem["position"], int)


@pytest.mark.parametrize(
    "body",
    [
        {"type": "delta", "reads": [{"endtimestamp": hour(8), "value": 1, "extra": 2}]},
        {"type": "monthly", "reads": [{"endtimestamp": hour(8), "value": 1}]},
        {"type": "delta", "reads": [{"endtimestamp": "yesterday", "value": 1}]},
        {"type": "delta", "reads": [{"endtimestamp": hour(8), "value": "lots"}]},
        {"type": "delta", "unit": "GWh", "reads": [{"endtimestamp": hour(8), "value": 1}]},
        {"type": "delta", "reads": []},
    ],
    ids=["unknown-field", "unknown-type", "bad-timestamp", "bad-value", "bad-unit", "no-reads"],
)
def test_malformed_requests_are_422(
    client: TestClient, keys: Keys, site: str, body: dict[str, Any]
) -> None:
    response = client.post("/meter-reads/site-1", headers=keys.owner, json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def test_only_the_owning_organization_reads_and_writes(
    client: TestClient, keys: Keys, site: str
) -> None:
    body = {"type": "delta", "reads": [{"endtimestamp": hour(8), "value": 1}]}
    other = client.post("/meter-reads/site-1", headers=keys.other_owner, json=body)
    assert other.status_code == 404
    assert client.get("/meter-reads/site-1", headers=keys.other_owner).status_code == 404
    assert client.post("/meter-reads/site-1", headers=keys.buyer, json=body).status_code == 403


@pytest.mark.parametrize("role", ["issuer", "viewer", "buyer"])
def test_the_issuer_auditors_and_buyers_read_any_organizations_intervals(
    client: TestClient, keys: Keys, site: str, role: str
) -> None:
    post(
        client,
        keys,
        {"type": "delta", "reads": [{"endtimestamp": hour(h), "value": 700} for h in (8, 9)]},
    )
    reader = getattr(keys, role)
    got = client.get("/meter-reads/site-1", headers=reader)
    assert got.status_code == 200, got.text
    assert got.json()["totalWh"] == 700
    assert client.post(
        "/meter-reads/site-1",
        headers=reader,
        json={"type": "delta", "reads": [{"endtimestamp": hour(10), "value": 1}]},
    ).status_code in (403, 404)  # reading is not writing

    # the same externalId in a second organization: the reader must say which one
    assert (
        client.post("/devices", headers=keys.other_owner, json=device("site-1")).status_code == 201
    )
    ambiguous = client.get("/meter-reads/site-1", headers=reader)
    assert (ambiguous.status_code, ambiguous.json()["error"]["code"]) == (409, "conflict")
    owner_org = client.get("/devices", headers=keys.owner).json()["devices"][0]["organizationId"]
    chosen = client.get("/meter-reads/site-1", headers=reader, params={"organizationId": owner_org})
    assert chosen.json()["totalWh"] == 700


def test_a_device_owner_cannot_read_another_organization_by_naming_it(
    client: TestClient, keys: Keys, site: str
) -> None:
    owner_org = client.get("/devices", headers=keys.owner).json()["devices"][0]["organizationId"]
    response = client.get(
        "/meter-reads/site-1", headers=keys.other_owner, params={"organizationId": owner_org}
    )
    assert response.status_code == 404


def test_concurrent_overlapping_history_is_stored_once(
    client: TestClient,
    keys: Keys,
    site: str,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first request pauses after reading what is stored, long enough for the second to
    read the same if nothing locked the device; with the lock the second waits, then sees
    the first one's interval and rejects its overlapping read."""
    import threading
    import time

    from granular.services import meter_reads as service
    from granular.services.accounts import authenticate

    read_recorded = service.recorded_for
    first = threading.Event()

    def slow_recorded(**kwargs: Any) -> Any:
        found = read_recorded(**kwargs)
        if not first.is_set():
            first.set()
            time.sleep(0.5)
        return found

    monkeypatch.setattr(service, "recorded_for", slow_recorded)
    caller = authenticate(sessions=sessions, authorization=keys.owner["Authorization"])
    outcomes: list[str] = []

    def submit(start: int) -> None:
        if start == 9:
            first.wait(5)
        result = service.ingest_reads(
            sessions=sessions,
            caller=caller,
            external_id=site,
            kind=service.ReadKind.HISTORY,
            unit=service.EnergyUnit.WH,
            reads=[
                service.SubmittedRead(
                    datetime.fromisoformat(hour(start + 2)),
                    Decimal(1000),
                    datetime.fromisoformat(hour(start)),
                )
            ],
            payload={},
            policy=MaxEnergyPolicy(),
            now=datetime(2026, 6, 15, tzinfo=UTC),
        )
        outcomes.append(result.batch.outcomes[0].status.value)

    threads = [threading.Thread(target=submit, args=(start,)) for start in (8, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["accepted", "rejected"]
    got = client.get("/meter-reads/site-1", headers=keys.owner).json()
    assert got["totalWh"] == 1000


def test_json_numbers_are_exact_not_floats(
    client: TestClient, keys: Keys, site: str, sessions: sessionmaker[Session]
) -> None:
    """1234.0000000000001 Wh is a fraction of a Wh, refused; a float parse would have made it
    1234 and accepted it. The body is kept digit for digit."""
    raw = (
        b'{"type": "history", "unit": "Wh", "reads": ['
        b'{"starttimestamp": "2026-06-01T08:00:00Z", "endtimestamp": "2026-06-01T09:00:00Z",'
        b' "value": 1234.0000000000001},'
        b'{"starttimestamp": "2026-06-01T09:00:00Z", "endtimestamp": "2026-06-01T10:00:00Z",'
        b' "value": 10.5e2}]}'
    )
    response = client.post(
        "/meter-reads/site-1",
        headers={**keys.owner, "Content-Type": "application/json"},
        content=raw,
    )
    assert response.status_code == 200, response.text
    reads = response.json()["reads"]
    assert [r["status"] for r in reads] == ["rejected", "accepted"]
    assert reads[0]["error"]["code"] == "fractional_wh"
    assert reads[1]["interval"]["energyWh"] == 1050
    with sessions() as session:
        (payload,) = session.scalars(select(ReadSubmissionRow.payload)).all()
    assert [read["value"] for read in payload["reads"]] == ["1234.0000000000001", 1050.0]


def test_time_range_bounds_in_any_zone_select_the_same_intervals(
    client: TestClient, keys: Keys, site: str
) -> None:
    post(
        client,
        keys,
        {
            "type": "history",
            "reads": [
                {"starttimestamp": hour(h), "endtimestamp": hour(h + 1), "value": 1000 + h}
                for h in range(6, 10)
            ],
        },
    )

    def energy(start: str, end: str) -> list[int]:
        got = client.get(
            "/meter-reads/site-1", headers=keys.owner, params={"start": start, "end": end}
        )
        assert got.status_code == 200, got.text
        return [i["energyWh"] for i in got.json()["intervals"]]

    in_utc = energy("2026-06-01T07:30:00Z", "2026-06-01T09:00:00Z")
    assert in_utc == [1007, 1008]
    assert energy("2026-06-01T09:30:00+02:00", "2026-06-01T11:00:00+02:00") == in_utc
    assert energy("2026-06-01T02:30:00-05:00", "2026-06-01T04:00:00-05:00") == in_utc


def test_a_truncated_range_says_where_to_go_on(client: TestClient, keys: Keys, site: str) -> None:
    post(
        client,
        keys,
        {
            "type": "history",
            "reads": [
                {"starttimestamp": hour(h), "endtimestamp": hour(h + 1), "value": 1000}
                for h in range(6, 11)
            ],
        },
    )
    first = client.get("/meter-reads/site-1", headers=keys.owner, params={"limit": 3}).json()
    assert (first["totalWh"], first["nextStart"]) == (3000, hour(9).replace("Z", "+00:00"))
    rest = client.get(
        "/meter-reads/site-1",
        headers=keys.owner,
        params={"limit": 3, "start": first["nextStart"]},
    ).json()
    assert (rest["totalWh"], rest["nextStart"]) == (2000, None)
    exact = client.get("/meter-reads/site-1", headers=keys.owner, params={"limit": 5}).json()
    assert (exact["totalWh"], exact["nextStart"]) == (5000, None)
