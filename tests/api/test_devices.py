"""/devices: one device, a JSON list, a D-REC CSV; access by organization and role."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Keys

HEADER = (
    "externalId,projectName,countryCode,fuelCode,deviceTypeCode,capacity,commissioningDate,"
    "gridInterconnection,offTaker,yieldValue,latitude,longitude"
)


def device(external_id: str = "site-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "externalId": external_id,
        "projectName": "Mini-grid Kisumu",
        "countryCode": "KEN",
        "fuelCode": "ES100",
        "deviceTypeCode": "TC110",
        "capacity": 50_000,
        "commissioningDate": "2024-03-01",
        "gridInterconnection": False,
        "offTaker": "Health Facility",
        "yieldValue": 1800,
        "latitude": -0.0917,
        "longitude": 34.768,
    }
    body.update(overrides)
    return body


def csv_upload(client: TestClient, headers: dict[str, str], text: str) -> Any:
    files = {"file": ("devices.csv", text.encode(), "text/csv")}
    return client.post("/devices/bulk", headers=headers, files=files)


def test_create_then_unchanged_then_updated(client: TestClient, keys: Keys) -> None:
    created = client.post("/devices", headers=keys.owner, json=device())
    assert created.status_code == 201, created.text
    assert created.json()["device"]["capacity"] == 50_000
    assert created.json()["device"]["commissioningDate"] == "2024-03-01T00:00:00+00:00"
    again = client.post("/devices", headers=keys.owner, json=device())
    assert (again.status_code, again.json()["status"]) == (200, "unchanged")
    changed = client.post("/devices", headers=keys.owner, json=device(capacity=60_000))
    assert (changed.status_code, changed.json()["status"]) == (200, "updated")
    listed = client.get("/devices", headers=keys.owner).json()["devices"]
    assert [(d["externalId"], d["capacity"]) for d in listed] == [("site-1", 60_000)]


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("externalId", "site 1", "must be 1-64 letters, digits, - or _"),
        ("capacity", 0, "must be > 0"),
        ("capacity", "12.5", "must be a whole number of W"),
        ("commissioningDate", "2027-01-01", "is in the future"),
        ("offTaker", "Spaceport", "must be one of"),
        ("latitude", 90.5, "must lie in [-90, 90]"),
        ("countryCode", None, "is required"),
    ],
    ids=[
        "externalId-space",
        "capacity-zero",
        "capacity-fraction",
        "commissioning-future",
        "offTaker-unknown",
        "latitude-over",
        "countryCode-missing",
    ],
)
def test_a_bad_field_is_named_with_its_rule(
    client: TestClient, keys: Keys, field: str, value: Any, rule: str
) -> None:
    response = client.post("/devices", headers=keys.owner, json=device(**{field: value}))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "device_rejected"
    assert error["details"]["field"] == field
    assert rule in error["details"]["reason"]
    assert client.get("/devices", headers=keys.owner).json()["devices"] == []


def test_unknown_field_is_refused(client: TestClient, keys: Keys) -> None:
    response = client.post("/devices", headers=keys.owner, json=device(colour="red"))
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "colour"


def test_a_list_stores_the_valid_and_reports_each(client: TestClient, keys: Keys) -> None:
    payload = [device("a"), device("b", capacity=-5), device("c"), device("a")]
    response = client.post("/devices", headers=keys.owner, json=payload)
    assert response.status_code == 200
    body = response.json()
    assert body["summary"] == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 2}
    statuses = [(r["index"], r["status"], r.get("field")) for r in body["results"]]
    assert statuses == [
        (0, "created", None),
        (1, "rejected", "capacity"),
        (2, "created", None),
        (3, "rejected", "externalId"),
    ]
    assert "repeats line 0" in body["results"][3]["reason"]


def test_external_id_is_unique_per_organization_not_across(client: TestClient, keys: Keys) -> None:
    assert client.post("/devices", headers=keys.owner, json=device("x")).status_code == 201
    assert client.post("/devices", headers=keys.other_owner, json=device("x")).status_code == 201
    everyone = client.get("/devices", headers=keys.buyer).json()["devices"]
    assert len(everyone) == 2
    own = client.get("/devices", headers=keys.other_owner).json()["devices"]
    assert len(own) == 1


def test_csv_rows_are_created_or_rejected_with_line_and_reason(
    client: TestClient, keys: Keys
) -> None:
    text = "\n".join(
        [
            HEADER,
            "s-1,P,KEN,ES100,TC110,5000,2023-01-01,true,School,1500,-1.2,36.8",
            "s-2,P,KEN,ES100,TC110,lots,2023-01-01,true,School,1500,-1.2,36.8",
            "",
            "s-3,P,NGA,ES100,TC110,7000,2023-01-01T00:00:00Z,no,Residential,,,",
            "s-4,P,NGA,ES100,TC110,7000",
        ]
    )
    response = csv_upload(client, keys.owner, text)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["line"], r["status"], r.get("field")) for r in results] == [
        (2, "created", None),
        (3, "rejected", "capacity"),
        (5, "created", None),
        (6, "rejected", "row"),
    ]
    assert results[1]["reason"] == "must be a whole number of W"
    assert results[2]["device"]["yieldValue"] == "1500"
    again = csv_upload(client, keys.owner, text).json()
    assert again["summary"] == {"created": 0, "updated": 0, "unchanged": 2, "rejected": 2}
    assert len(client.get("/devices", headers=keys.owner).json()["devices"]) == 2


def test_csv_header_with_unknown_or_missing_columns_is_refused(
    client: TestClient, keys: Keys
) -> None:
    response = csv_upload(client, keys.owner, "externalId,colour\nx,red\n")
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details["unknown"] == ["colour"]
    assert "capacity" in details["missing"]


def test_filters_used_by_buyers(client: TestClient, keys: Keys) -> None:
    client.post(
        "/devices",
        headers=keys.owner,
        json=[
            device("small", capacity=1_000),
            device("big", capacity=900_000, countryCode="NGA"),
            device("wind", fuelCode="ES200", offTaker="Commercial", deviceTypeCode="TC120"),
        ],
    )

    def ids(**query: Any) -> list[str]:
        found = client.get("/devices", headers=keys.buyer, params=query).json()["devices"]
        return sorted(d["externalId"] for d in found)

    assert ids(countryCode="NGA") == ["big"]
    assert ids(fuelCode="ES200") == ["wind"]
    assert ids(offTaker="Commercial") == ["wind"]
    assert ids(deviceTypeCode="TC110") == ["big", "small"]
    assert ids(capacityMin=1_000, capacityMax=50_000) == ["small", "wind"]
    assert ids(capacityMin=1_001) == ["big", "wind"]


@pytest.mark.parametrize("role", ["buyer", "viewer"])
def test_only_owners_and_the_issuer_write_devices(
    client: TestClient, keys: Keys, role: str
) -> None:
    response = client.post("/devices", headers=getattr(keys, role), json=device())
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}],
    ids=["missing", "unknown-key", "wrong-scheme"],
)
def test_every_endpoint_needs_a_key(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get("/devices", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


def test_malformed_json_wrong_types_and_oversize_are_4xx(client: TestClient, keys: Keys) -> None:
    headers = {**keys.owner, "Content-Type": "application/json"}
    malformed = client.post("/devices", headers=headers, content=b'{"externalId": ')
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (400, "malformed_json")
    wrong_type = client.post("/devices", headers=headers, content=b'"just a string"')
    assert (wrong_type.status_code, wrong_type.json()["error"]["code"]) == (422, "invalid_request")
    big = client.post("/devices", headers=headers, content=b"[" + b" " * 2_100_000 + b"]")
    assert (big.status_code, big.json()["error"]["code"]) == (413, "payload_too_large")

    def chunks() -> Any:
        for _ in range(30):
            yield b" " * 100_000

    streamed = client.post("/devices", headers=headers, content=chunks())
    assert streamed.status_code == 413
    missing = client.get("/nowhere", headers=keys.owner)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")


def test_values_are_kept_as_the_storage_holds_them_so_a_re_upload_changes_nothing(
    client: TestClient, keys: Keys
) -> None:
    """Latitude and longitude are rounded to the 6 places the columns keep; without that a
    GPS reading's 7th digit was stored rounded and every re-upload came back "updated"."""
    gps = device(latitude="-1.29206594", longitude=36.82194615)
    created = client.post("/devices", headers=keys.owner, json=gps)
    assert created.status_code == 201, created.text
    stored = created.json()["device"]
    assert (stored["latitude"], stored["longitude"]) == ("-1.292066", "36.821946")
    again = client.post("/devices", headers=keys.owner, json=gps)
    assert (again.status_code, again.json()["status"]) == (200, "unchanged")
    line = "gps,P,KEN,ES100,TC110,5000,2023-01-01,true,School,1500.1234,-1.29206594,36.82194615"
    assert csv_upload(client, keys.owner, f"{HEADER}\n{line}\n").json()["summary"]["created"] == 1
    again_csv = csv_upload(client, keys.owner, f"{HEADER}\n{line}\n").json()
    assert again_csv["summary"]["unchanged"] == 1


@pytest.mark.parametrize(
    ("value", "accepted"),
    [("1500.1234", True), ("1500.12345", False), ("0.0001", True), ("0.00001", False)],
    ids=["4-places", "5-places", "smallest", "rounds-to-zero"],
)
def test_a_yield_has_at_most_4_decimal_places(
    client: TestClient, keys: Keys, value: str, accepted: bool
) -> None:
    """A yield of 0.00001 used to be stored as 0: the device was kept, and every meter read
    for it then failed (a yield must be positive)."""
    response = client.post("/devices", headers=keys.owner, json=device(yieldValue=value))
    if accepted:
        assert response.status_code == 201, response.text
        assert response.json()["device"]["yieldValue"] == value
        reads = {"type": "delta", "reads": [{"endtimestamp": "2026-06-01T00:00:00Z", "value": 0}]}
        answer = client.post("/meter-reads/site-1", headers=keys.owner, json=reads)
        assert answer.status_code == 200, answer.text
    else:
        assert response.status_code == 422
        assert response.json()["error"]["details"]["reason"] == "has more than 4 decimal places"


def test_a_concurrent_upload_of_the_same_device_is_a_conflict_not_a_500(
    client: TestClient, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import IntegrityError

    from granular.services import devices as service

    def raced(**_: Any) -> Any:
        raise IntegrityError("INSERT INTO devices", {}, Exception("unique"))

    monkeypatch.setattr(service, "upsert_device", raced)
    response = client.post("/devices", headers=keys.owner, json=[device("a"), device("b")])
    assert (response.status_code, response.json()["error"]["code"]) == (409, "conflict")


def test_a_capacity_with_a_fraction_beyond_float_precision_is_still_refused(
    client: TestClient, keys: Keys
) -> None:
    """Parsed as a float, 5000.0000000000001 W became 5000.0 and was accepted."""
    raw = b'{"externalId": "x", "countryCode": "KEN", "fuelCode": "ES100",'
    raw += b' "deviceTypeCode": "TC110", "capacity": 5000.0000000000001,'
    raw += b' "commissioningDate": "2024-03-01", "gridInterconnection": true, "offTaker": "School"}'
    headers = {**keys.owner, "Content-Type": "application/json"}
    response = client.post("/devices", headers=headers, content=raw)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["field"] == "capacity"


# --- kind: production (default) or consumption --------------------------------------------


def test_kind_defaults_to_production_and_takes_consumption(client: TestClient, keys: Keys) -> None:
    plant = client.post("/devices", headers=keys.owner, json=device("plant")).json()
    assert plant["device"]["kind"] == "production"
    response = client.post("/devices", headers=keys.owner, json=device("meter", kind="consumption"))
    assert response.status_code == 201
    assert response.json()["device"]["kind"] == "consumption"
    found = client.get("/devices", headers=keys.owner, params={"kind": "consumption"}).json()
    assert [d["externalId"] for d in found["devices"]] == ["meter"]
    found = client.get("/devices", headers=keys.owner, params={"kind": "production"}).json()
    assert [d["externalId"] for d in found["devices"]] == ["plant"]
    assert len(client.get("/devices", headers=keys.owner).json()["devices"]) == 2


@pytest.mark.parametrize("value", ["load", "Production", 1], ids=["word", "case", "number"])
def test_a_bad_kind_is_refused_naming_the_field_and_the_valid_values(
    client: TestClient, keys: Keys, value: object
) -> None:
    response = client.post("/devices", headers=keys.owner, json=device(kind=value))
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details["field"] == "kind"
    assert "production, consumption" in details["reason"]


def test_a_bad_kind_filter_is_refused(client: TestClient, keys: Keys) -> None:
    response = client.get("/devices", headers=keys.owner, params={"kind": "load"})
    assert response.status_code == 422


def test_csv_takes_a_kind_column(client: TestClient, keys: Keys) -> None:
    text = "\n".join(
        [
            f"{HEADER},kind",
            "s-1,P,KEN,ES100,TC110,5000,2023-01-01,true,School,1500,-1.2,36.8,consumption",
            "s-2,P,KEN,ES100,TC110,5000,2023-01-01,true,School,1500,-1.2,36.8,",
            "s-3,P,KEN,ES100,TC110,5000,2023-01-01,true,School,1500,-1.2,36.8,meter",
        ]
    )
    results = csv_upload(client, keys.owner, text).json()["results"]
    assert [(r["status"], r.get("field")) for r in results] == [
        ("created", None),
        ("created", None),
        ("rejected", "kind"),
    ]
    assert [r["device"]["kind"] for r in results[:2]] == ["consumption", "production"]


def test_a_change_of_kind_is_an_update_with_a_revision(client: TestClient, keys: Keys) -> None:
    created = client.post("/devices", headers=keys.owner, json=device("m")).json()["device"]
    again = client.post("/devices", headers=keys.owner, json=device("m", kind="production"))
    assert again.json()["status"] == "unchanged"
    changed = client.post("/devices", headers=keys.owner, json=device("m", kind="consumption"))
    assert changed.json()["status"] == "updated"
    response = client.get(f"/devices/{created['id']}/revisions", headers=keys.owner)
    assert [r["kind"] for r in response.json()["revisions"]] == ["production", "consumption"]
