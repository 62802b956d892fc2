"""D-REC formats through the API: the device file as D-REC users write it (pipe separated,
typographic quotes, the full header), the D-REC device JSON, device groups, GET /codes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from granular.domain.drec import DREC_HEADER
from tests.api.conftest import Keys
from tests.api.test_devices import csv_upload, device

# A D-REC device file as a developer's spreadsheet exports it: pipe separated, cells in
# typographic quotes (one with a pipe inside, one with quotes inside), the full header.
DREC_FILE = "\n".join(
    [
        "|".join(DREC_HEADER),
        "“1.0”|“KE-SHS-0001”|“KE-GRP-1”|“17”|“Solar Co Kenya Ltd”|“Jane Wanjiru”|“SunKing”"
        "|“Plot 7 | Oginga Odinga Rd, Kisumu”|-0.0917|34.768|KEN|“40100”|ES100|TC120|“450”"
        "|2023-11-02T00:00:00Z|false|true|“1200”|Residential|“Lighting Global, VeraSol”"
        "|“SDG1, SDG7, Good Health and Well-being”"
        "|“The family’s children study after dark with the “Pro 400” kit.”"
        "|“https://example.org/a.jpg; https://example.org/b.jpg”",
        "1.0 | KE-MG-0002 | KE-GRP-1 | 17 | Solar Co Kenya Ltd | Jane Wanjiru | Victron"
        " | Homa Bay | -0.5273 | 34.4571 | KEN | 40300 | ES100 | TC110 | 60000"
        " | 2022-05-01 | false | false | 0 | Off-Grid Community | | SDG7 | | ",
        "1.0|KE-SHS-0003|KE-GRP-9|17|Solar Co Kenya Ltd|Jane Wanjiru|SunKing|Kisumu|-0.1|34.7"
        "|KEN|40100|ES100|TC120|450|2023-11-02|false|false||Residential||SDG7||",
        "1.0|KE-SHS-0004|KE-GRP-1|17|Solar Co Kenya Ltd|Jane Wanjiru|SunKing|Kisumu|-0.1|34.7"
        "|KEN|40100|ES999|TC120|450|2023-11-02|false|false||Residential||SDG7||",
    ]
)


def group(group_id: str = "KE-GRP-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "deviceGrpId": group_id,
        "name": "Kisumu household solar",
        "SDGBenefits": "SDG7; SDG3",
        "impactStory": "Light and phone charging for 2,000 households",
        "images": ["https://example.org/group.jpg"],
    }
    body.update(overrides)
    return body


def drec_device(external_id: str = "KE-JSON-1", **overrides: Any) -> dict[str, Any]:
    """A device as the D-REC platform's JSON holds it (capacity in W here)."""
    body: dict[str, Any] = {
        "version": "1.0",
        "externalId": external_id,
        "deviceGrpId": "KE-GRP-1",
        "orgId": 17,
        "organisationName": "Solar Co Kenya Ltd",
        "deviceOnBoardedBy": "Jane Wanjiru",
        "deviceOEM": "SunKing",
        "address": "Kisumu",
        "latitude": -0.0917,
        "longitude": 34.768,
        "countryCode": "KEN",
        "postalCode": "40100",
        "fuelCode": "ES100",
        "deviceTypeCode": "TC120",
        "capacity": 450,
        "commissioningDate": "2023-11-02T00:00:00Z",
        "gridInterconnection": False,
        "energyStorage": True,
        "energyStorageCapacity": 1200,
        "offTaker": "Residential",
        "qualityLabels": "Lighting Global",
        "SDGBenefits": ["SDG7", "No Poverty"],
        "impactStory": "Study after dark",
        "images": ["https://example.org/a.jpg"],
    }
    body.update(overrides)
    return body


def by_external_id(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    listed = client.get("/devices", headers=headers).json()["devices"]
    return {d["externalId"]: d for d in listed}


def test_a_drec_pipe_file_with_typographic_quotes_is_stored_field_by_field(
    client: TestClient, keys: Keys
) -> None:
    created = client.post("/device-groups", headers=keys.owner, json=group())
    assert created.status_code == 201, created.text
    group_id = created.json()["deviceGroup"]["id"]

    response = csv_upload(client, keys.owner, DREC_FILE)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["line"], r["status"], r.get("field"), r.get("code")) for r in results] == [
        (2, "created", None, None),
        (3, "created", None, None),
        (4, "rejected", "deviceGrpId", "unknown_device_group"),
        (5, "rejected", "fuelCode", "device_field_invalid"),
    ]
    assert "POST /device-groups" in results[2]["reason"]
    assert "ES100" in results[3]["valid"]

    stored = by_external_id(client, keys.owner)
    shs = stored["KE-SHS-0001"]
    assert {key: shs[key] for key in ("version", "deviceGrpId", "orgId", "capacity")} == {
        "version": "1.0",
        "deviceGrpId": "KE-GRP-1",
        "orgId": "17",
        "capacity": 450,
    }
    assert shs["organisationName"] == "Solar Co Kenya Ltd"
    assert shs["address"] == "Plot 7 | Oginga Odinga Rd, Kisumu"
    assert shs["impactStory"] == "The family’s children study after dark with the “Pro 400” kit."
    assert shs["images"] == ["https://example.org/a.jpg", "https://example.org/b.jpg"]
    assert (shs["SDGBenefits"], shs["sdgBenefitsBits"]) == (["SDG1", "SDG3", "SDG7"], 0b1000101)
    assert (shs["energyStorage"], shs["energyStorageCapacity"]) == (True, 1200)
    assert (shs["qualityLabels"], shs["postalCode"], shs["deviceOEM"]) == (
        "Lighting Global, VeraSol",
        "40100",
        "SunKing",
    )
    grid = stored["KE-MG-0002"]
    assert (grid["qualityLabels"], grid["impactStory"], grid["images"]) == (None, None, [])
    assert (grid["energyStorage"], grid["energyStorageCapacity"]) == (False, 0)

    again = csv_upload(client, keys.owner, DREC_FILE).json()["summary"]
    assert again == {"created": 0, "updated": 0, "unchanged": 2, "rejected": 2}

    members = client.get(f"/device-groups/{group_id}", headers=keys.owner).json()
    assert members["deviceGroup"]["deviceIds"] == sorted([shs["id"], grid["id"]])
    in_group = client.get("/devices", headers=keys.buyer, params={"deviceGrpId": "KE-GRP-1"})
    assert sorted(d["id"] for d in in_group.json()["devices"]) == sorted([shs["id"], grid["id"]])
    other = client.get("/devices", headers=keys.buyer, params={"deviceGrpId": "KE-GRP-9"})
    assert other.json()["devices"] == []
    revisions = client.get(f"/devices/{shs['id']}/revisions", headers=keys.owner).json()
    assert revisions["revisions"][0]["impactStory"] == shs["impactStory"]


def test_the_same_file_comma_separated_with_straight_quotes_is_read_alike(
    client: TestClient, keys: Keys
) -> None:
    client.post("/device-groups", headers=keys.owner, json=group())
    row = (
        '1.0,KE-SHS-0001,KE-GRP-1,17,"Solar Co, Kenya",Jane,SunKing,"Plot 7, Kisumu",-0.0917,'
        "34.768,KEN,40100,ES100,TC120,450,2023-11-02,false,true,1200,Residential,,"
        '"SDG1,SDG7","She said ""thanks""",a.jpg'
    )
    response = csv_upload(client, keys.owner, ",".join(DREC_HEADER) + "\n" + row + "\n")
    assert response.json()["summary"]["created"] == 1, response.text
    stored = by_external_id(client, keys.owner)["KE-SHS-0001"]
    assert (stored["organisationName"], stored["impactStory"]) == (
        "Solar Co, Kenya",
        'She said "thanks"',
    )
    assert stored["SDGBenefits"] == ["SDG1", "SDG7"]


def test_a_column_outside_the_drec_list_refuses_the_file_listing_the_accepted(
    client: TestClient, keys: Keys
) -> None:
    text = "|".join([*DREC_HEADER, "colour"]) + "\n"
    response = csv_upload(client, keys.owner, text)
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details["unknown"] == ["colour"]
    assert set(DREC_HEADER) <= set(details["known"])


def test_an_unclosed_typographic_quote_refuses_the_file_naming_the_line(
    client: TestClient, keys: Keys
) -> None:
    text = "|".join(DREC_HEADER) + "\n1.0|“KE-1|x\n"
    error = csv_upload(client, keys.owner, text).json()["error"]
    assert (error["code"], error["details"]["line"]) == ("csv_invalid", 2)


@pytest.mark.parametrize("separator", [";", "\t"], ids=["semicolon", "tab"])
def test_a_file_in_another_separator_is_told_to_use_comma_or_pipe(
    client: TestClient, keys: Keys, separator: str
) -> None:
    """Excel writes semicolons where the decimal mark is a comma."""
    text = separator.join(DREC_HEADER) + "\n" + separator.join(["1.0", "KE-1"]) + "\n"
    error = csv_upload(client, keys.owner, text).json()["error"]
    assert error["code"] == "csv_invalid"
    assert error["details"]["field"] == "header"
    assert "commas or pipes" in error["message"]


def test_a_windows_1252_file_is_refused_saying_how_to_save_it(
    client: TestClient, keys: Keys
) -> None:
    """Excel on Windows writes “ ” as the bytes 0x93 0x94: not UTF-8."""
    text = "|".join(DREC_HEADER) + "\n1.0|\u201cKE-1\u201d\n"
    files = {"file": ("devices.csv", text.encode("cp1252"), "text/csv")}
    error = client.post("/devices/bulk", headers=keys.owner, files=files).json()["error"]
    assert error["code"] == "csv_invalid"
    assert "0x93" in error["message"] and "CSV UTF-8" in error["message"]


def test_an_unknown_json_field_lists_the_known_ones(client: TestClient, keys: Keys) -> None:
    response = client.post("/devices", headers=keys.owner, json=drec_device(colour="red"))
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details["field"] == "colour"
    assert set(DREC_HEADER) <= set(details["valid"])


def test_the_drec_device_json_is_accepted_with_its_version(client: TestClient, keys: Keys) -> None:
    client.post("/device-groups", headers=keys.owner, json=group())
    response = client.post("/devices", headers=keys.owner, json=drec_device())
    assert response.status_code == 201, response.text
    stored = response.json()["device"]
    assert (stored["version"], stored["orgId"], stored["SDGBenefits"]) == (
        "1.0",
        "17",
        ["SDG1", "SDG7"],
    )
    again = client.post("/devices", headers=keys.owner, json=drec_device())
    assert (again.status_code, again.json()["status"]) == (200, "unchanged")
    changed = client.post("/devices", headers=keys.owner, json=drec_device(deviceOEM="Bboxx"))
    assert (changed.status_code, changed.json()["status"]) == (200, "updated")


def test_a_device_naming_a_group_of_another_organization_is_refused(
    client: TestClient, keys: Keys
) -> None:
    client.post("/device-groups", headers=keys.owner, json=group())
    response = client.post("/devices", headers=keys.other_owner, json=drec_device())
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert (details["field"], details["rule"]) == ("deviceGrpId", "unknown_device_group")


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [("fuelCode", "ES999", "ES100"), ("deviceTypeCode", "TC100", "TC110")],
    ids=["fuel", "device-type"],
)
def test_a_refused_code_lists_the_valid_ones(
    client: TestClient, keys: Keys, field: str, value: str, valid: str
) -> None:
    response = client.post("/devices", headers=keys.owner, json=device(**{field: value}))
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details["field"] == field
    assert valid in details["valid"]
    codes = client.get("/codes", headers=keys.owner).json()
    listed = codes["fuelCodes" if field == "fuelCode" else "deviceTypeCodes"]
    assert [c["code"] for c in listed] == details["valid"]


def test_codes_name_each_code_and_mark_the_drec_ones(client: TestClient, keys: Keys) -> None:
    assert client.get("/codes").status_code == 401
    codes = client.get("/codes", headers=keys.viewer).json()
    fuels = {c["code"]: c for c in codes["fuelCodes"]}
    assert fuels["ES100"] == {"code": "ES100", "name": "Solar", "drec": True}
    assert fuels["ES200"]["drec"] is False
    types = {c["code"]: c["name"] for c in codes["deviceTypeCodes"]}
    assert types["TC110"] == "Solar PV: Ground mounted"
    assert [s["bit"] for s in codes["sdgs"]] == [1 << n for n in range(17)]
    assert codes["sdgs"][6]["name"] == "Affordable and Clean Energy"


def test_groups_are_created_updated_listed_and_read_per_organization(
    client: TestClient, keys: Keys
) -> None:
    created = client.post("/device-groups", headers=keys.owner, json=group())
    assert created.status_code == 201, created.text
    body = created.json()["deviceGroup"]
    assert (body["SDGBenefits"], body["sdgBenefitsBits"], body["deviceIds"]) == (
        ["SDG3", "SDG7"],
        0b1000100,
        [],
    )
    same = client.post("/device-groups", headers=keys.owner, json=group())
    assert (same.status_code, same.json()["status"]) == (200, "unchanged")
    renamed = client.post("/device-groups", headers=keys.owner, json=group(name="Renamed"))
    assert (renamed.status_code, renamed.json()["status"]) == (200, "updated")
    theirs = client.post("/device-groups", headers=keys.other_owner, json=group())
    assert theirs.status_code == 201  # deviceGrpId is unique per organization

    own = client.get("/device-groups", headers=keys.owner).json()["deviceGroups"]
    assert [(g["deviceGrpId"], g["name"]) for g in own] == [("KE-GRP-1", "Renamed")]
    assert len(client.get("/device-groups", headers=keys.issuer).json()["deviceGroups"]) == 2
    group_id = body["id"]
    assert client.get(f"/device-groups/{group_id}", headers=keys.other_owner).status_code == 404
    assert client.get(f"/device-groups/{group_id}", headers=keys.buyer).status_code == 200
    assert client.get("/device-groups/999999", headers=keys.owner).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (group(SDGBenefits="SDG18"), "SDGBenefits"),
        (group(name=""), "name"),
        (group(colour="red"), "colour"),
        (group(deviceGrpId="has space"), "deviceGrpId"),
    ],
    ids=["sdg-18", "no-name", "unknown-field", "bad-id"],
)
def test_a_bad_group_field_is_named(
    client: TestClient, keys: Keys, body: dict[str, Any], field: str
) -> None:
    response = client.post("/device-groups", headers=keys.owner, json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["details"]["field"]) == ("device_group_field_invalid", field)
    assert client.get("/device-groups", headers=keys.owner).json()["deviceGroups"] == []


def test_only_owners_and_the_issuer_write_groups(client: TestClient, keys: Keys) -> None:
    response = client.post("/device-groups", headers=keys.buyer, json=group())
    assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")
