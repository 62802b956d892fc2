"""The reports and a reservation's matching state are typed answers: /docs lists their
fields, the CSV and SVG forms are documented with their media types, and the bodies the
routes send hold exactly the documented fields (an empty registry here; the figures of a
matched wallet are in tests/integration/test_reports.py)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Keys

PERIOD = {"from": "2026-06-01T00:00:00+00:00", "to": "2026-06-01T03:00:00+00:00"}
HEAD = {"wallets", "from", "to", "resolution", "claimedWh"}
CLAIMS = HEAD | {
    "consumedWh",
    "score",
    "claims",
    "byFuelCode",
    "byTechCode",
    "byCountry",
    "byDevice",
    "series",
}
SERIES = ["start", "claimedWh"]
ORIGIN = HEAD | {"rows"}
ORIGIN_ROW = ["start", "device", "fuelCode", "techCode", "country", "claimedWh"]
MATCHING = {
    "state",
    "detail",
    "updatedAt",
    "claimedWh",
    "consumedWh",
    "producedWh",
    "deficitWh",
    "surplusWh",
    "score",
}


def _document(client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The model a `$ref` names; an untyped answer names none."""
    assert "$ref" in schema, f"not a model: {schema}"
    name = schema["$ref"].removeprefix("#/components/schemas/")
    model: dict[str, Any] = document["components"]["schemas"][name]
    return model


def _answer(document: dict[str, Any], path: str) -> dict[str, Any]:
    content: dict[str, Any] = document["paths"][path]["get"]["responses"]["200"]["content"]
    return content


def _item_model(document: dict[str, Any], model: dict[str, Any], prop: str) -> dict[str, Any]:
    return _resolve(document, model["properties"][prop]["items"])


@pytest.mark.parametrize(
    ("path", "fields", "rows", "row_fields"),
    [
        ("/reports/claims", CLAIMS, "series", SERIES),
        ("/reports/origin", ORIGIN, "rows", ORIGIN_ROW),
    ],
    ids=["claims", "origin"],
)
def test_a_report_documents_its_fields_and_its_csv(
    client: TestClient, path: str, fields: set[str], rows: str, row_fields: list[str]
) -> None:
    document = _document(client)
    content = _answer(document, path)
    model = _resolve(document, content["application/json"]["schema"])
    assert set(model["properties"]) == fields
    assert set(model["required"]) == fields  # null, never left out
    assert all(p.get("description") for k, p in model["properties"].items() if k != "series")
    row = _item_model(document, model, rows)
    assert list(row["properties"]) == row_fields  # the CSV header, in order
    assert content["text/csv"] == {"schema": {"type": "string"}}
    assert ",".join(row_fields) in document["paths"][path]["get"]["responses"]["200"]["description"]


def test_the_chart_documents_its_media_type(client: TestClient) -> None:
    content = _answer(_document(client), "/reports/matching.svg")
    assert list(content) == ["image/svg+xml"]


def test_the_matching_state_of_a_reservation_is_typed(client: TestClient) -> None:
    document = _document(client)
    reservation = _resolve(
        document, _answer(document, "/reservations/{reservation_id}")["application/json"]["schema"]
    )
    matching = _resolve(document, reservation["properties"]["matching"]["anyOf"][0])
    assert set(matching["properties"]) == MATCHING
    state = _resolve(document, matching["properties"]["state"])
    assert set(state["enum"]) == {
        "waiting_for_operator",
        "claiming",
        "up_to_date",
        "waiting_for_certificates",
    }


def test_the_bodies_hold_exactly_the_documented_fields(client: TestClient, keys: Keys) -> None:
    """An empty registry: every bucket of the period at zero, no score, no origin row, and
    the CSV of no row is its header alone."""
    claims = client.get(
        "/reports/claims", params={**PERIOD, "resolution": "hourly"}, headers=keys.viewer
    )
    assert claims.status_code == 200, claims.text
    body = claims.json()
    assert set(body) == CLAIMS
    assert body["wallets"] is None  # a viewer reads every wallet
    assert (body["from"], body["to"], body["resolution"]) == (
        PERIOD["from"],
        PERIOD["to"],
        "hourly",
    )
    assert body["series"] == [
        {"start": f"2026-06-01T0{h}:00:00+00:00", "claimedWh": 0} for h in range(3)
    ]
    assert (body["claimedWh"], body["consumedWh"], body["score"], body["claims"]) == (0, 0, None, 0)
    assert body["byFuelCode"] == body["byDevice"] == {}

    origin = client.get("/reports/origin", params=PERIOD, headers=keys.buyer)
    assert origin.status_code == 200, origin.text
    assert set(origin.json()) == ORIGIN
    assert origin.json()["wallets"] == [] and origin.json()["rows"] == []
    assert origin.json()["resolution"] == "daily"

    as_csv = client.get("/reports/origin", params={**PERIOD, "format": "csv"}, headers=keys.buyer)
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text == ",".join(ORIGIN_ROW) + "\n"
    series = client.get(
        "/reports/claims", params=PERIOD, headers={**keys.viewer, "Accept": "text/csv"}
    )
    assert list(csv.reader(io.StringIO(series.text))) == [SERIES] + [
        [f"2026-06-01T0{h}:00:00+00:00", "0"] for h in range(3)
    ]
