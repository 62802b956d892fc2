"""The read API of the registry mirror over SQLite and PostgreSQL: rows come from folding
events through the indexer's own `apply_events`, with headers stored as the issuer does."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.headers import put_headers
from granular.domain.headers import canonical_json, data_hash, data_hash_hex
from granular.domain.mirror import (
    BatchIssued,
    CertificateIssued,
    EventMeta,
    OperatorSet,
    RegistryEvent,
    SliceClaimed,
    SliceSplit,
    SliceTransferred,
    WalletClosed,
)
from granular.domain.slices import Kind
from granular.services.indexer import apply_events
from tests.api.conftest import Keys

BASE = "/interface/registry/v1"
ALICE = "0x" + "A1" * 20
BOB = "0x" + "B2" * 20
CAROL = "0x" + "C3" * 20
_logs = itertools.count()


def checksum(address: str) -> str:
    from eth_utils.address import to_checksum_address

    return to_checksum_address(address)


A, B, C = checksum(ALICE), checksum(BOB), checksum(CAROL)


def meta(block: int = 10) -> EventMeta:
    index = next(_logs)
    return EventMeta(block, "0x" + "ee" * 32, "0x" + f"{index + 1:064x}", index)


def header(fuel: str, country: str, hour: int, reservation: int = 1) -> dict[str, object]:
    start = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=hour)
    return {
        "assetID": f"PLANT-{fuel}",
        "deviceId": 41,
        "fuelCode": fuel,
        "techCode": "TC110",
        "location": {"countryCode": country},
        "periodStart": start.isoformat(),
        "periodEnd": (start + timedelta(hours=1)).isoformat(),
        "buyerReservationId": reservation,
    }


Issue = Callable[..., int]


@pytest.fixture(params=["by-certificate-ids", "by-join"])
def header_filter_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Header filters run two ways (few matching certificates: by their ids; many: by a
    join in id order); both must give the same answers."""
    if request.param == "by-join":
        monkeypatch.setattr("granular.adapters.db.mirror.SELECTIVE_CERTIFICATES", 0)


@pytest.fixture
def mirror(sessions: sessionmaker[Session]) -> Callable[[list[RegistryEvent]], None]:
    def fold(events: list[RegistryEvent]) -> None:
        with sessions.begin() as session:
            apply_events(session=session, events=events)

    return fold


@pytest.fixture
def issue(sessions: sessionmaker[Session], mirror: Callable[[list[RegistryEvent]], None]) -> Issue:
    counter = itertools.count(1)

    def one(
        owner: str,
        kind: Kind = Kind.PRODUCTION,
        qty: int = 1000,
        head: dict[str, object] | None = None,
    ) -> int:
        certificate_id = next(counter)
        if head is not None:
            canonical = canonical_json(head)
            digest = data_hash_hex(canonical)
            with sessions.begin() as session:
                put_headers(session=session, headers=[(digest, canonical)], now=datetime.now(UTC))
        else:
            digest = "0x" + data_hash(f"foreign-{certificate_id}".encode()).hex()
        mirror(
            [
                CertificateIssued(meta(), certificate_id, owner, kind, qty, digest),
                BatchIssued(meta(), "0x" + "bb" * 32, certificate_id, 1),
            ]
        )
        return certificate_id

    return one


@pytest.fixture
def world(issue: Issue, mirror: Callable[[list[RegistryEvent]], None]) -> dict[str, int]:
    """1: Alice's ES100/KE production 1700 split 1200 (Bob) / 500 (Alice); 2: Bob's
    consumption 1200, claimed against slice 4; 3: Carol's ES200/NG production;
    5: a foreign certificate with no header. Carol's wallet closes after giving 3 away."""
    production = issue(A, Kind.PRODUCTION, 1700, header("ES100", "KE", 0, 7))
    consumption = issue(B, Kind.CONSUMPTION, 1200, header("ES100", "KE", 0, 7))
    other = issue(C, Kind.PRODUCTION, 300, header("ES200", "NG", 5, 8))
    mirror(
        [
            SliceSplit(meta(11), production, production, (4, 5), (1200, 500), (B, A)),
            SliceClaimed(meta(12), 4, 4, consumption, 1200),
            SliceTransferred(meta(13), other, C, A),
            WalletClosed(meta(13), C),
            OperatorSet(meta(14), A, B, True),
        ]
    )
    # the next certificate id is 6 (4 and 5 are the split's children)
    foreign = 6
    mirror(
        [
            CertificateIssued(meta(15), foreign, A, Kind.PRODUCTION, 50, "0x" + "99" * 32),
        ]
    )
    return {"production": production, "consumption": consumption, "other": other}


def test_reading_needs_a_key_and_any_role_may_read(
    client: TestClient, keys: Keys, world: dict[str, int]
) -> None:
    assert client.get(f"{BASE}/slices").status_code == 401
    for who in (keys.viewer, keys.buyer, keys.owner, keys.issuer):
        assert client.get(f"{BASE}/slices", headers=who).status_code == 200


def test_a_certificate_shows_its_header_slices_claims_and_transaction(
    client: TestClient, keys: Keys, world: dict[str, int]
) -> None:
    body = client.get(f"{BASE}/certificates/1", headers=keys.viewer).json()
    assert body["certificateID"] == 1
    assert body["certificateType"] == "production"
    assert body["quantityWh"] == 1700
    assert body["issuedTo"] == A
    assert body["txHash"].startswith("0x") and len(body["txHash"]) == 66
    assert (body["fuelCode"], body["techCode"], body["countryCode"]) == ("ES100", "TC110", "KE")
    assert body["periodStart"].startswith("2026-03-01T00:00:00")
    assert body["reservationID"] == "7"
    assert body["header"]["assetID"] == "PLANT-ES100"
    # Anyone can verify: keccak256 of the served canonical header is the chain's dataHash.
    assert data_hash_hex(body["headerCanonical"].encode()) == body["dataHash"]
    assert [(s["sliceID"], s["state"], s["quantityWh"], s["owner"]) for s in body["slices"]] == [
        (1, "Removed", 1700, A),
        (4, "Claimed", 1200, B),
        (5, "Active", 500, A),
    ]
    assert [(c["claimID"], c["consumptionSliceID"], c["quantityWh"]) for c in body["claims"]] == [
        (4, 2, 1200)
    ]
    # Provenance: where the reservation and the device's parameter revisions are served.
    assert body["links"]["reservation"] == "/reservations/7"
    assert body["links"]["device"] == "/devices/41/revisions"
    sliced = client.get(body["links"]["slices"], headers=keys.viewer).json()
    assert [s["sliceID"] for s in sliced["slices"]] == [1, 4, 5]


def test_a_certificate_of_another_issuer_has_no_header(
    client: TestClient, keys: Keys, world: dict[str, int]
) -> None:
    body = client.get(f"{BASE}/certificates/6", headers=keys.viewer).json()
    assert body["header"] is None and body["headerCanonical"] is None
    assert body["fuelCode"] is None
    assert set(body["links"]) == {"self", "slices", "claims"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", [1, 2, 3, 4, 5, 6]),
        (f"owner={A}", [1, 3, 5, 6]),
        (f"owner={A.lower()}&state=Active", [3, 5, 6]),
        ("state=Claimed", [2, 4]),
        ("certificateType=consumption", [2]),
        ("fuelCode=ES100", [1, 2, 4, 5]),
        ("countryCode=NG", [3]),
        ("assetID=PLANT-ES200", [3]),
        ("reservationID=7&certificateType=production", [1, 4, 5]),
        ("periodFrom=2026-03-01T04:00:00Z&periodTo=2026-03-02T00:00:00Z", [3]),
        ("periodTo=2026-03-01T01:00:00%2B00:00", [1, 2, 4, 5]),
        ("periodTo=2026-03-01T00:59:59Z", []),
        ("certificateID=1", [1, 4, 5]),
        ("sort=-id", [6, 5, 4, 3, 2, 1]),
    ],
    ids=[
        "all",
        "owner",
        "owner-any-case-active",
        "state",
        "kind",
        "fuel",
        "country",
        "asset",
        "reservation",
        "period-within",
        "period-ends-at-the-bound",
        "period-ends-after-the-bound",
        "certificate",
        "newest-first",
    ],
)
def test_slice_filters(
    client: TestClient,
    keys: Keys,
    world: dict[str, int],
    header_filter_path: None,
    query: str,
    expected: list[int],
) -> None:
    response = client.get(f"{BASE}/slices?{query}", headers=keys.viewer)
    assert response.status_code == 200, response.text
    assert [s["sliceID"] for s in response.json()["slices"]] == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"owner={A}", [1, 6]),
        ("state=Active", [1, 3, 6]),
        ("fuelCode=ES200", [3]),
        ("certificateType=consumption", [2]),
        ("periodFrom=2026-03-01T00:00:00Z&periodTo=2026-03-01T01:00:00Z", [1, 2]),
        ("periodFrom=2026-03-01T00:00:01Z", [3]),
    ],
    ids=["issued-to", "has-active-slice", "fuel", "kind", "period-both-edges", "starts-after"],
)
def test_certificate_filters(
    client: TestClient,
    keys: Keys,
    world: dict[str, int],
    header_filter_path: None,
    query: str,
    expected: list[int],
) -> None:
    response = client.get(f"{BASE}/certificates?{query}", headers=keys.viewer)
    assert response.status_code == 200, response.text
    assert [c["certificateID"] for c in response.json()["certificates"]] == expected


def test_pages_are_stable_while_certificates_are_issued(
    client: TestClient, keys: Keys, world: dict[str, int], mirror: Callable[..., None]
) -> None:
    seen: list[int] = []
    cursor: str | None = None
    new_id = 100
    while True:
        url = f"{BASE}/slices?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=keys.viewer).json()
        assert len(page["slices"]) <= 2
        seen.extend(s["sliceID"] for s in page["slices"])
        # Between two pages, a slice appears below the cursor and another above it.
        mirror([CertificateIssued(meta(20), new_id, B, Kind.PRODUCTION, 1, "0x" + "98" * 32)])
        new_id += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
        assert len(seen) < 50
    assert seen == sorted(set(seen))
    assert seen[:6] == [1, 2, 3, 4, 5, 6]
    assert set(seen) >= {1, 2, 3, 4, 5, 6}


def test_a_full_last_page_says_there_is_no_next(
    client: TestClient, keys: Keys, world: dict[str, int]
) -> None:
    first = client.get(f"{BASE}/slices?limit=3", headers=keys.viewer).json()
    assert first["nextCursor"] == "3"
    last = client.get(f"{BASE}/slices?limit=3&cursor=3", headers=keys.viewer).json()
    assert [s["sliceID"] for s in last["slices"]] == [4, 5, 6]
    assert last["nextCursor"] is None


def test_claims_by_owner_and_by_id(
    client: TestClient, keys: Keys, world: dict[str, int], header_filter_path: None
) -> None:
    body = client.get(f"{BASE}/claims?owner={B}", headers=keys.viewer).json()
    assert [c["claimID"] for c in body["claims"]] == [4]
    claim = client.get(f"{BASE}/claims/4", headers=keys.viewer).json()
    assert (claim["claimant"], claim["consumer"]) == (B, B)
    assert (claim["productionCertificateID"], claim["consumptionCertificateID"]) == (1, 2)
    assert client.get(f"{BASE}/claims?owner={C}", headers=keys.viewer).json()["claims"] == []
    assert client.get(f"{BASE}/claims?fuelCode=ES200", headers=keys.viewer).json()["claims"] == []
    by_fuel = client.get(f"{BASE}/claims?fuelCode=ES100", headers=keys.viewer).json()
    assert [c["claimID"] for c in by_fuel["claims"]] == [4]


def test_wallets_show_status_counts_and_operators(
    client: TestClient, keys: Keys, world: dict[str, int]
) -> None:
    alice = client.get(f"{BASE}/wallets/{A.lower()}", headers=keys.viewer).json()
    assert alice == {
        "publicKey": A,
        "name": None,
        "status": "active",
        "activeSlices": 3,
        "operators": [B],
    }
    closed = client.get(f"{BASE}/wallets?status=closed", headers=keys.viewer).json()
    assert [w["publicKey"] for w in closed["wallets"]] == [C]
    everyone = client.get(f"{BASE}/wallets?limit=2", headers=keys.viewer).json()
    rest = client.get(
        f"{BASE}/wallets?limit=2&cursor={everyone['nextCursor']}", headers=keys.viewer
    ).json()
    assert [w["publicKey"] for w in everyone["wallets"] + rest["wallets"]] == sorted([A, B, C])


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/certificates/999", 404, "not_found"),
        ("/slices/999", 404, "not_found"),
        ("/claims/1", 404, "not_found"),
        (f"/wallets/{'0x' + 'de' * 20}", 404, "not_found"),
        ("/wallets/not-an-address", 422, "public_key_invalid"),
        ("/slices?owner=0x1234", 422, "public_key_invalid"),
        ("/slices?cursor=abc", 422, "cursor_invalid"),
        ("/slices?state=Gone", 422, "invalid_request"),
        ("/slices?limit=501", 422, "invalid_request"),
        ("/slices?periodFrom=2026-03-01T00:00:00", 422, "invalid_request"),
        ("/certificates/0", 422, "invalid_request"),
    ],
    ids=[
        "certificate",
        "slice",
        "claim",
        "wallet",
        "bad-key",
        "bad-owner",
        "bad-cursor",
        "bad-state",
        "limit-over",
        "naive-time",
        "id-zero",
    ],
)
def test_unknown_and_malformed(
    client: TestClient, keys: Keys, world: dict[str, int], path: str, status: int, code: str
) -> None:
    response = client.get(f"{BASE}{path}", headers=keys.viewer)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_openapi_names_every_field(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"sliceID", "certificateID", "owner", "state", "quantityWh", "parentSliceID"} <= set(
        schemas["SlicePublic"]["properties"]
    )
    assert {"header", "headerCanonical", "slices", "claims", "txHash"} <= set(
        schemas["CertificateDetailPublic"]["properties"]
    )
    assert "nextCursor" in schemas["SlicePagePublic"]["properties"]
