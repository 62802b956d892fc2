"""/docs is the contract, and it works offline: every asset is served by the API itself."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient


def _asset_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html) + re.findall(
        r"""url:\s*["']([^"']+)["']""", html
    )


def test_docs_reference_only_local_urls_and_the_assets_are_served(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    urls = _asset_urls(page.text)
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls), urls
    assert any(u.endswith("swagger-ui.css") for u in urls), urls
    remote = [u for u in urls if re.match(r"^(https?:)?//", u)]
    assert remote == [], f"/docs pulls from the network: {remote}"
    for url in urls:
        got = client.get(url)
        assert got.status_code == 200, url
        assert got.content, url
    js = client.get("/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in js.text
    assert client.get("/redoc").status_code == 404  # ReDoc would come from a CDN


def _schema(client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def test_openapi_declares_the_bearer_scheme_for_the_authorize_button(client: TestClient) -> None:
    document = _schema(client)
    schemes = document["components"]["securitySchemes"]
    assert schemes == {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": schemes["HTTPBearer"]["description"],
        }
    }
    devices = document["paths"]["/devices"]["get"]
    assert devices["security"] == [{"HTTPBearer": []}]
    assert "authorization" not in [p["name"].lower() for p in devices.get("parameters", [])]
    assert "security" not in document["paths"]["/healthz"]["get"]


FLEET = ("/devices", "/device-groups", "/codes", "/meter-reads", "/reservations")


def test_every_fleet_route_documents_a_typed_answer_in_camel_case(client: TestClient) -> None:
    """Each operation of the fleet routers names its answer's model, so /docs shows the
    fields; every property of every model is camelCase (the D-REC `SDGBenefits` and the
    registry's `certificateID` style included, a snake_case name is not)."""
    document = _schema(client)
    untyped = []
    for path, operations in document["paths"].items():
        if not path.startswith(FLEET):
            continue
        for method, operation in operations.items():
            answers = operation["responses"]
            ok = answers.get("201") or answers.get("200")
            schema = ok["content"]["application/json"]["schema"]
            if not ("$ref" in schema or "anyOf" in schema):
                untyped.append(f"{method.upper()} {path}")
    assert untyped == []
    snake = [
        f"{name}.{prop}"
        for name, model in document["components"]["schemas"].items()
        for prop in model.get("properties", {})
        if "_" in prop
    ]
    assert snake == []


def test_the_documented_creation_statuses(client: TestClient) -> None:
    document = _schema(client)
    assert "201" in document["paths"]["/reservations"]["post"]["responses"]
    assert "201" in document["paths"]["/devices"]["post"]["responses"]
    assert "201" in document["paths"]["/device-groups"]["post"]["responses"]
    reads = document["paths"]["/meter-reads/{external_id}"]["post"]["responses"]
    assert "all_reads_rejected" in reads["422"]["description"]


def test_bodies_taken_as_they_are_still_document_their_fields(client: TestClient) -> None:
    document = _schema(client)

    def body(path: str) -> dict[str, Any]:
        schema: dict[str, Any] = document["paths"][path]["post"]["requestBody"]["content"][
            "application/json"
        ]["schema"]
        return schema

    one_device = body("/devices")["anyOf"][0]
    assert {"externalId", "capacity", "deviceGrpId", "SDGBenefits", "kind"} <= set(
        one_device["properties"]
    )
    assert "externalId" in one_device["required"]
    assert set(body("/device-groups")["properties"]) >= {"deviceGrpId", "name", "SDGBenefits"}
    error = document["paths"]["/devices"]["get"]["responses"]["403"]["content"]
    assert error["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


def test_routes_that_read_the_chain_document_503_and_the_others_do_not(
    client: TestClient,
) -> None:
    paths = _schema(client)["paths"]
    advanced = paths["/interface/registry/v1/claims/advanced"]["post"]["responses"]
    assert "503" in advanced and "chain_unavailable" in advanced["503"]["description"]
    mirror_read = paths["/interface/registry/v1/slices"]["get"]["responses"]
    assert "503" not in mirror_read
