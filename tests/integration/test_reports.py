"""Reports over the mirror, through the HTTP API, on anvil and both databases: claimed
energy by code and period (JSON and CSV), its origin, the matching chart, and who may
read which wallet."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from typing import Any

from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.anvil import Anvil
from granular.api.app import create_app
from granular.services.accounts import create_api_key
from tests.integration.chain import Chain
from tests.integration.issuance_helpers import utc
from tests.integration.matching_helpers import approve, make_fleet, match_all
from tests.integration.outbox_helpers import _close_senders  # noqa: F401  (autouse)

START = utc(2026, 6, 22, 10)
NOW = utc(2026, 6, 29, 3)
SOLAR, WIND, SITE = [4_000, 0, 6_000], [3_000, 2_000, 1_000], [6_000, 5_000, 4_000]
MATCHED = [min(s + w, c) for s, w, c in zip(SOLAR, WIND, SITE, strict=True)]  # 6000 2000 4000


def key(sessions: sessionmaker[Session], organization: str, role: str) -> dict[str, str]:
    created = create_api_key(
        sessions=sessions, organization=organization, role=role, label=None, now=NOW
    )
    return {"Authorization": f"Bearer {created.key}"}


def test_reports_of_a_matched_wallet(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    buyer: str,
) -> None:
    fleet = make_fleet(
        engine=engine,
        sessions=sessions,
        anvil=anvil,
        chain=chain,
        deployment=deployment,
        issuer_account=issuer_account,
        wallet=buyer,
        start=START,
        hours=3,
        solar=lambda i: SOLAR[i],
        wind=lambda i: WIND[i],
        site=lambda i: SITE[i],
        now=NOW,
    )
    approve(chain, buyer, issuer_account.address)
    match_all(sessions, fleet, NOW)
    client = TestClient(create_app(sessions=sessions, clock=lambda: NOW))
    mine = key(sessions, "buyer", "buyer")
    period = {"from": START.isoformat(), "to": utc(2026, 6, 22, 13).isoformat()}

    got = client.get("/reports/claims", params={**period, "resolution": "hourly"}, headers=mine)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["wallets"] == [buyer]
    assert [s["claimedWh"] for s in body["series"]] == MATCHED
    assert body["claimedWh"] == sum(MATCHED)
    assert body["consumedWh"] == sum(SITE)
    assert body["score"] == "0.8000"  # 12,000 of 15,000 Wh
    assert body["byFuelCode"] == {"ES100": sum(MATCHED)}
    assert body["byCountry"] == {"KEN": sum(MATCHED)}
    assert sum(body["byDevice"].values()) == sum(MATCHED)
    daily = client.get("/reports/claims", params={**period, "resolution": "daily"}, headers=mine)
    assert [s["claimedWh"] for s in daily.json()["series"]] == [sum(MATCHED)]

    as_csv = client.get("/reports/claims", params=period, headers={**mine, "Accept": "text/csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [int(r["claimedWh"]) for r in rows] == MATCHED
    same = client.get("/reports/claims", params={**period, "format": "csv"}, headers=mine)
    assert same.text == as_csv.text

    origin = client.get("/reports/origin", params={**period, "resolution": "hourly"}, headers=mine)
    assert origin.status_code == 200, origin.text
    by_hour: dict[str, int] = {}
    for row in origin.json()["rows"]:
        assert (row["fuelCode"], row["country"]) == ("ES100", "KEN")
        by_hour[row["start"]] = by_hour.get(row["start"], 0) + row["claimedWh"]
    assert list(by_hour.values()) == MATCHED
    documented = client.get("/openapi.json").json()["components"]["schemas"]
    assert set(body) == set(documented["ClaimsReportPublic"]["properties"])
    assert set(origin.json()) == set(documented["OriginReportPublic"]["properties"])
    assert list(origin.json()["rows"][0]) == list(documented["OriginRowPublic"]["properties"])
    origin_csv = client.get("/reports/origin", params={**period, "format": "csv"}, headers=mine)
    assert origin_csv.text.splitlines()[0] == "start,device,fuelCode,techCode,country,claimedWh"

    svg = client.get("/reports/matching.svg", params=period, headers=mine)
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    root = ET.fromstring(svg.text)  # well-formed
    ns = "{http://www.w3.org/2000/svg}"
    bars = root.find(f"{ns}g[@class='claimed']")
    assert bars is not None and len(bars) == 3
    score = sum(MATCHED) / sum(SITE)
    assert f"matching score {score * 100:.1f} %" in svg.text
    production = root.find(f"{ns}polyline[@class='production']")
    assert production is not None and len(production.attrib["points"].split()) == 3

    # Who sees what: another buyer is refused this wallet and sees nothing of its own.
    other = key(sessions, "someone else", "buyer")
    refused = client.get("/reports/claims", params={**period, "wallet": buyer}, headers=other)
    assert refused.status_code == 403
    assert client.get("/reports/claims", params=period, headers=other).json()["claimedWh"] == 0
    viewer = key(sessions, "auditor", "viewer")
    assert client.get("/reports/claims", params=period, headers=viewer).json()["claimedWh"] == sum(
        MATCHED
    )
    owner = key(sessions, "plants", "device_owner")
    assert client.get("/reports/claims", params=period, headers=owner).status_code == 403
    backwards = {"from": period["to"], "to": period["from"]}
    assert client.get("/reports/claims", params=backwards, headers=mine).status_code in (400, 422)
