"""Requests a fuzzer would send: each gets a 4xx in the one error shape, never a 500, and
nothing is stored from them."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.devices import DeviceRow
from granular.adapters.db.readings import MeterReadRow
from tests.api.conftest import Keys
from tests.api.test_devices import HEADER, csv_upload, device

MAX_INT64 = 2**63 - 1
WALLET = "0x" + "ab" * 20


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["details"], dict)
    return error


# Public on purpose: probes and Prometheus scrapers carry no API key; they show no data of
# any organization.
PUBLIC = {("get", "/healthz"), ("get", "/metrics")}


def test_every_route_needs_a_key_and_answers_in_the_one_shape(client: TestClient) -> None:
    paths: dict[str, dict[str, Any]] = client.get("/openapi.json").json()["paths"]
    operations = [(method, path) for path, ops in paths.items() for method in ops]
    assert len(operations) >= 9
    assert set(operations) >= PUBLIC
    for method, path in PUBLIC:
        assert client.request(method.upper(), path).status_code == 200, path
    for method, template in set(operations) - PUBLIC:
        path = template.replace("{external_id}", "site-1").replace("{reservation_id}", "1")
        response = client.request(method.upper(), path, json={})
        assert error_of(response, 401)["code"] == "unauthenticated", (method, path)


def test_errors_without_details_still_carry_an_empty_details_object(
    client: TestClient, keys: Keys
) -> None:
    assert error_of(client.get("/nowhere", headers=keys.owner), 404)["details"] == {}
    assert error_of(client.put("/devices", headers=keys.owner), 405)["details"] == {}
    forbidden = client.post("/devices", headers=keys.viewer, json=device())
    assert error_of(forbidden, 403)["details"] == {}
    not_found = client.get("/meter-reads/nothing-here", headers=keys.owner)
    assert error_of(not_found, 404)["details"] == {}
    problems = error_of(client.post("/devices", headers=keys.owner, json=[1]), 422)["details"]
    assert problems["problems"][0]["type"] == "dict_type"


def test_an_unexpected_error_is_a_500_in_the_one_shape(
    client: TestClient, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from granular.api.routers import devices as router

    def broken(**_: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(router, "find_devices", broken)
    error = error_of(client.get("/devices", headers=keys.owner), 500)
    assert (error["code"], error["details"]) == ("internal_error", {})
    assert "boom" not in error["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("latitude", "NaN"),
        ("longitude", "sNaN"),
        ("yieldValue", "NaN"),
        ("yieldValue", "-Infinity"),
        ("commissioningDate", "0001-01-01T00:00:00+01:00"),
        ("commissioningDate", "9999-12-31T23:00:00-05:00"),
    ],
    ids=["lat-nan", "long-snan", "yield-nan", "yield-minus-inf", "date-below-1", "date-above-9999"],
)
def test_unordered_numbers_and_unreachable_dates_are_rejected_not_500(
    client: TestClient, keys: Keys, field: str, value: str
) -> None:
    response = client.post("/devices", headers=keys.owner, json=device(**{field: value}))
    error = error_of(response, 422)
    assert (error["code"], error["details"]["field"]) == ("device_rejected", field)
    line = "n-1,P,KEN,ES100,TC110,5000,2023-01-01,true,School,1500,-1.2,36.8"
    cells = dict(zip(HEADER.split(","), line.split(","), strict=True))
    cells[field] = value
    answer = csv_upload(client, keys.owner, HEADER + "\n" + ",".join(cells.values()) + "\n")
    assert answer.status_code == 200, answer.text
    assert [(r["status"], r["field"]) for r in answer.json()["results"]] == [("rejected", field)]
    assert client.get("/devices", headers=keys.owner).json()["devices"] == []


@pytest.mark.parametrize(
    "read",
    [
        {"endtimestamp": "9999-12-31T23:00:00-05:00", "value": 1},
        {"starttimestamp": "0001-01-01T00:00:00+05:00", "endtimestamp": "2026-01-01T00:00Z"},
    ],
    ids=["end-beyond-9999-in-utc", "start-before-year-1-in-utc"],
)
def test_timestamps_utc_cannot_hold_are_rejected_read_by_read(
    client: TestClient, keys: Keys, sessions: sessionmaker[Session], read: dict[str, Any]
) -> None:
    assert client.post("/devices", headers=keys.owner, json=device("site-1")).status_code == 201
    kind = "history" if "starttimestamp" in read else "delta"
    good = {"endtimestamp": "2026-05-01T00:00:00Z", "value": 1}
    if kind == "history":
        good = {
            "starttimestamp": "2026-05-01T00:00:00Z",
            "endtimestamp": "2026-05-01T01:00:00Z",
            "value": 1,
        }
    body = {"type": kind, "reads": [{"value": 1, **read}, good]}
    response = client.post("/meter-reads/site-1", headers=keys.owner, json=body)
    assert response.status_code == 200, response.text
    reads = response.json()["reads"]
    assert [r["status"] for r in reads] == ["rejected", "accepted"]
    assert reads[0]["error"]["code"] == "timestamp_out_of_range"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(MeterReadRow)) == 1
    far = client.get(
        "/meter-reads/site-1", headers=keys.owner, params={"end": "9999-12-31T23:00:00-05:00"}
    )
    assert error_of(far, 422)["code"] == "timestamp_out_of_range"


@pytest.mark.parametrize(
    "overrides",
    [
        {"end": "9999-12-31T23:00:00-05:00"},
        {"start": "0001-01-01T00:00:00+05:00"},
    ],
    ids=["end-beyond-9999-in-utc", "start-before-year-1-in-utc"],
)
def test_reservation_timestamps_utc_cannot_hold_are_422(
    client: TestClient, keys: Keys, overrides: dict[str, str]
) -> None:
    created = client.post("/devices", headers=keys.owner, json=device("site-1")).json()
    body = {
        "devices": [created["device"]["id"]],
        "frequency": "monthly",
        "start": "2026-07-01T00:00:00Z",
        "end": "2026-12-01T00:00:00Z",
        "targetVolumeWh": 1000,
        "wallet": WALLET,
        **overrides,
    }
    refused = client.post("/reservations", headers=keys.buyer, json=body)
    assert error_of(refused, 422)["code"] == "timestamp_out_of_range"
    del body["start"], body["end"]
    created = client.post(
        "/reservations",
        headers=keys.buyer,
        json={**body, "start": "2026-07-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
    )
    assert created.status_code == 201, created.text
    url = f"/reservations/{created.json()['id']}"
    patch = client.patch(url, headers=keys.buyer, json={"end": "9999-12-31T23:00:00-05:00"})
    assert error_of(patch, 422)["code"] == "timestamp_out_of_range"


@pytest.mark.parametrize(
    "url",
    [
        f"/devices?offset={MAX_INT64 + 1}",
        f"/devices?offset={10**30}",
        f"/devices?capacityMin={MAX_INT64 + 1}",
        f"/devices?capacityMax={10**30}",
        f"/reservations?offset={MAX_INT64 + 1}",
    ],
    ids=["offset-2^63", "offset-1e30", "capacity-min", "capacity-max", "reservations-offset"],
)
def test_query_integers_a_database_cannot_hold_are_422(
    client: TestClient, keys: Keys, url: str
) -> None:
    assert error_of(client.get(url, headers=keys.buyer), 422)["code"] == "invalid_request"


def test_the_largest_accepted_query_integers_work(client: TestClient, keys: Keys) -> None:
    for url in (
        f"/devices?offset={MAX_INT64}&capacityMin={MAX_INT64}&capacityMax={MAX_INT64}",
        f"/reservations?offset={MAX_INT64}",
    ):
        assert client.get(url, headers=keys.buyer).status_code == 200


def test_a_csv_cell_over_the_reader_limit_refuses_the_file_naming_the_line(
    client: TestClient, keys: Keys, sessions: sessionmaker[Session]
) -> None:
    ok = "s-1,P,KEN,ES100,TC110,5000,2023-01-01,true,School,1500,-1.2,36.8"
    huge = "s-2," + "x" * 200_000 + ",KEN,ES100,TC110,5000,2023-01-01,true,School,1500,-1.2,36.8"
    response = csv_upload(client, keys.owner, "\n".join([HEADER, ok, huge]))
    error = error_of(response, 422)
    assert (error["code"], error["details"]["line"]) == ("csv_invalid", 3)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(DeviceRow)) == 0


def test_a_repeated_csv_column_refuses_the_file(client: TestClient, keys: Keys) -> None:
    row = "s-1,P,KEN,ES100,TC110,5000,2023-01-01,true,School,1500,-1.2,36.8,5"
    text = f"{HEADER},latitude\n{row}\n"
    error = error_of(csv_upload(client, keys.owner, text), 422)
    assert (error["code"], error["details"]["repeated"]) == ("csv_invalid", ["latitude"])


def test_a_csv_row_is_reported_at_the_line_it_starts_on(client: TestClient, keys: Keys) -> None:
    text = "\n".join(
        [
            HEADER,
            's-1,"Two\nline project",KEN,ES100,TC110,5000,2023-01-01,true,Spaceport,1500,-1.2,36.8',
            "s-2,P,KEN,ES100,TC110,lots,2023-01-01,true,School,1500,-1.2,36.8",
        ]
    )
    results = csv_upload(client, keys.owner, text).json()["results"]
    assert [(r["line"], r["field"]) for r in results] == [(2, "offTaker"), (4, "capacity")]


@pytest.mark.parametrize(
    "raw",
    [
        b'"projectName": "a\\u0000b"',
        b'"description": "\\ud800"',
        b'"externalId": "\\udfff"',
        b'"\\ud800": 1',
    ],
    ids=["nul", "lone-surrogate", "surrogate-external-id", "surrogate-field-name"],
)
def test_text_postgresql_or_utf8_cannot_hold_is_rejected_not_500(
    client: TestClient, keys: Keys, sessions: sessionmaker[Session], raw: bytes
) -> None:
    """NUL was a DataError on PostgreSQL, a lone surrogate an encoding error on both
    backends, and an error naming such a value failed again while being rendered."""
    body = b'{"externalId": "x", "countryCode": "KEN", "fuelCode": "ES100",'
    body += b' "deviceTypeCode": "TC110", "capacity": 5000, "commissioningDate": "2024-03-01",'
    body += b' "gridInterconnection": true, "offTaker": "School", ' + raw + b"}"
    headers = {**keys.owner, "Content-Type": "application/json"}
    response = client.post("/devices", headers=headers, content=body)
    assert error_of(response, 422)["code"] == "device_rejected"
    cells = "n-1,P\x00P,KEN,ES100,TC110,5000,2023-01-01,true,School,1500,-1.2,36.8"
    rows = csv_upload(client, keys.owner, f"{HEADER}\n{cells}\n").json()["results"]
    assert [(r["status"], r["field"]) for r in rows] == [("rejected", "projectName")]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(DeviceRow)) == 0


@pytest.mark.parametrize(
    "query",
    [
        {"countryCode": "K\x00N"},
        {"fuelCode": "ES\x00"},
        {"deviceTypeCode": "T\x00"},
        {"offTaker": "Sch\x00ol"},
    ],
    ids=["countryCode", "fuelCode", "deviceTypeCode", "offTaker"],
)
def test_a_filter_with_a_nul_is_422_not_500(
    client: TestClient, keys: Keys, query: dict[str, str]
) -> None:
    assert error_of(client.get("/devices", headers=keys.buyer, params=query), 422)


def test_filters_in_their_stored_shape_still_work(client: TestClient, keys: Keys) -> None:
    assert client.post("/devices", headers=keys.owner, json=device("site-1")).status_code == 201
    query = {
        "countryCode": "KEN",
        "fuelCode": "ES100",
        "deviceTypeCode": "TC110",
        "offTaker": "Health Facility",
    }
    found = client.get("/devices", headers=keys.buyer, params=query).json()["devices"]
    assert [d["externalId"] for d in found] == ["site-1"]
