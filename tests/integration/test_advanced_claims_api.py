"""`POST /claims/advanced` through HTTP on a real anvil, on SQLite and PostgreSQL: a buyer
claims a consumption slice from its own production slices, the best matches first (same
period, overlap, then fuelCode, techCode, countryCode), in one signed claimBatch whose later
entries name the consumption remainder as slice 0. The plan comes from the mirror, every
slice in it is checked on chain, and a plan that changed since it was signed is refused.
"""

# The registry fixtures are imported from the commands' tests, and pytest passes them by name.
# ruff: noqa: F811

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import select

from granular.adapters.chain.events import RegistryEventReader
from granular.adapters.db.mirror import MirrorClaimRow
from granular.services.indexer import IndexerConfig, index_once
from tests.integration.outbox_helpers import (  # _close_senders: an autouse fixture
    CHAIN_ID,
    _close_senders,  # noqa: F401
    requests_of,
)
from tests.integration.test_registry_commands_api import (  # fixtures, imported to be used
    ACTIVE,
    CLAIMED,
    CONSUMPTION,
    PRODUCTION,
    REMOVED,
    V1,
    Registry,
    buyer_account,  # noqa: F401
    refused,
    registry,  # noqa: F401
    stranger_account,  # noqa: F401
)

HOUR = timedelta(hours=1)
H = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def issue(
    registry: Registry,
    owner: str,
    kind: str,
    quantity_wh: int,
    start: datetime,
    fuel: str = "ES100",
    tech: str = "TC110",
    country: str = "DE",
) -> int:
    """A certificate whose header carries the period and codes the mirror ranks by."""
    before: int = registry.chain.registry.functions.nextId().call()
    header = {
        "deviceId": f"{kind}-{before}",
        "periodStart": _iso(start),
        "periodEnd": _iso(start + HOUR),
        "fuelCode": fuel,
        "techCode": tech,
        "countryCode": country,
    }
    body = {
        "idempotencyKey": f"adv-{before}",
        "owner": owner,
        "kind": kind,
        "quantityWh": quantity_wh,
        "header": header,
    }
    response = registry.client.post(f"{V1}/certificates", json=body, headers=registry.issuer_key)
    assert response.status_code == 202, response.text
    registry.confirmed(response.json())
    return before


def index(registry: Registry, deployment: dict[str, Any]) -> None:
    reader = RegistryEventReader(registry.chain.w3, registry.chain.registry.address)
    config = IndexerConfig(chain_id=CHAIN_ID, deployment_block=deployment["blockNumber"])
    index_once(
        sessions=registry.sessions, source=reader, config=config, now=lambda: datetime.now(UTC)
    )


def typed_plan(registry: Registry, **params: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    response = registry.client.get(f"{V1}/claims/advanced/typed-data", params=params)
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer["typedData"], answer["plan"]


def signed_body(
    registry: Registry,
    account: LocalAccount,
    typed: dict[str, Any],
    plan: dict[str, Any],
    **fields: Any,
) -> dict[str, Any]:
    claims = [{"source": c["source"], "quantityWh": c["quantityWh"]} for c in plan["claims"]]
    return registry.signed(account, typed, target=plan["target"], claims=claims, **fields)


@pytest.fixture
def fleet(
    registry: Registry, buyer_account: LocalAccount, deployment: dict[str, Any]
) -> dict[str, int]:
    """The buyer's 1,000 Wh of consumption in hour H and its production slices."""
    buyer = buyer_account.address
    slices = {
        "consumption": issue(registry, buyer, "consumption", 1000, H),
        "same_es100": issue(registry, buyer, "production", 300, H, fuel="ES100"),
        "same_es200": issue(registry, buyer, "production", 500, H, fuel="ES200"),
        "overlap": issue(registry, buyer, "production", 400, H + HOUR / 2),
        "other_day": issue(registry, buyer, "production", 600, H + 24 * HOUR, fuel="ES200"),
    }
    index(registry, deployment)
    return slices


def test_a_consumption_slice_is_claimed_from_the_best_matches_in_one_signed_batch(
    registry: Registry,
    buyer_account: LocalAccount,
    fleet: dict[str, int],
    deployment: dict[str, Any],
) -> None:
    buyer = buyer_account.address
    consumption = fleet["consumption"]

    typed, plan = typed_plan(
        registry, **{"from": buyer, "target": consumption, "fuelCode": "ES200"}
    )

    # The same hour first, the preferred fuel before the other; then the overlap, in part.
    assert [(c["source"], c["quantityWh"], c["whole"]) for c in plan["claims"]] == [
        (fleet["same_es200"], 500, True),
        (fleet["same_es100"], 300, True),
        (fleet["overlap"], 200, False),
    ]
    assert (plan["wallet"], plan["quantityWh"]) == (buyer, 1000)
    assert plan["periodStart"].startswith("2026-06-01T12:00")
    body = signed_body(registry, buyer_account, typed, plan, fuelCode="ES200")
    # The plan goes back as served, and a signature as eth_account's .hex() gives it (no 0x).
    body["claims"] = plan["claims"]
    body["signature"] = body["signature"].removeprefix("0x")
    found = registry.confirmed(registry.post("/claims/advanced", body))
    assert found["kind"] == "advanced_claim"

    # One transaction; the consumption slice is claimed whole across three claims.
    receipt = registry.chain.w3.eth.get_transaction_receipt(found["txHash"])
    claimed = [
        (e.args.productionSliceId, e.args.quantityWh)
        for e in registry.chain.events(receipt, "SliceClaimed")
    ]
    assert [q for _, q in claimed] == [500, 300, 200]
    assert registry.slice(consumption)[2] == REMOVED
    assert registry.slice(fleet["same_es200"])[2] == CLAIMED
    assert registry.slice(fleet["same_es100"])[2] == CLAIMED
    assert registry.slice(fleet["overlap"])[2] == REMOVED
    assert registry.slice(fleet["other_day"]) == (
        buyer,
        PRODUCTION,
        ACTIVE,
        600,
        fleet["other_day"],
    )
    rest = [
        registry.slice(i)
        for i in range(fleet["other_day"] + 1, registry.chain.registry.functions.nextId().call())
    ]
    active = [(kind, q) for owner, kind, state, q, _ in rest if state == ACTIVE]
    assert active == [(PRODUCTION, 200)]  # what the overlapping slice kept
    assert sum(q for _, kind, state, q, _ in rest if kind == CONSUMPTION and state == CLAIMED) == (
        1000
    )

    # The mirror sees the same three claims against the one consumption certificate.
    index(registry, deployment)
    with registry.sessions() as session:
        mirrored = session.scalars(select(MirrorClaimRow).order_by(MirrorClaimRow.id)).all()
    # (claim ids are the production slices' ids: in slice order, not in the plan's order)
    assert sorted((c.production_slice_id, c.quantity_wh) for c in mirrored) == sorted(claimed)
    assert {c.consumption_certificate_id for c in mirrored} == {consumption}


def test_part_of_a_slice_with_overlap_required_leaves_the_rest_of_the_consumption(
    registry: Registry, buyer_account: LocalAccount, fleet: dict[str, int]
) -> None:
    buyer = buyer_account.address
    params = {"from": buyer, "target": fleet["consumption"], "quantityWh": 900}
    typed, plan = typed_plan(registry, **params, requireOverlap="true", countryCode="DE")
    assert [c["quantityWh"] for c in plan["claims"]] == [300, 500, 100]
    body = signed_body(
        registry, buyer_account, typed, plan, quantityWh=900, requireOverlap=True, countryCode="DE"
    )

    registry.confirmed(registry.post("/claims/advanced", body))

    last = registry.chain.registry.functions.nextId().call() - 1
    consumption_left = [
        registry.slice(i)
        for i in range(fleet["other_day"] + 1, last + 1)
        if registry.slice(i)[1] == CONSUMPTION and registry.slice(i)[2] == ACTIVE
    ]
    assert [q for _, _, _, q, _ in consumption_left] == [100]


def test_more_than_the_matching_production_is_refused_with_what_is_available(
    registry: Registry, buyer_account: LocalAccount, fleet: dict[str, int]
) -> None:
    params = {"from": buyer_account.address, "target": fleet["consumption"]}
    # Hour H and the overlap hold 300 + 500 + 400 = 1,200 Wh: enough, until 500 move away.
    typed_plan(registry, **params, requireOverlap="true")
    registry.chain.send(
        registry.chain.registry.functions.transfer(fleet["same_es200"], registry.sender.signer),
        buyer_account.address,
    )
    error = refused(
        registry.client.get(
            f"{V1}/claims/advanced/typed-data", params={**params, "requireOverlap": "true"}
        ),
        422,
        "not_enough_production",
    )
    # The mirror still lists the moved slice; the chain check skips it.
    assert error["details"]["availableWh"] == 700
    assert error["details"]["requireOverlap"] is True
    assert "requireOverlap" in error["message"]


def test_a_plan_that_changed_since_it_was_signed_is_refused_with_the_new_plan(
    registry: Registry,
    buyer_account: LocalAccount,
    fleet: dict[str, int],
    deployment: dict[str, Any],
) -> None:
    buyer = buyer_account.address
    typed, plan = typed_plan(registry, **{"from": buyer, "target": fleet["consumption"]})
    body = signed_body(registry, buyer_account, typed, plan)
    # Since the signature one planned slice moved away and another of the same hour came.
    newcomer = issue(registry, buyer, "production", 1000, H)
    registry.chain.send(
        registry.chain.registry.functions.transfer(fleet["same_es100"], registry.sender.signer),
        buyer,
    )
    index(registry, deployment)
    before = len(requests_of(registry.sessions))

    error = refused(
        registry.client.post(f"{V1}/claims/advanced", json=body), 409, "advanced_claim_plan_changed"
    )

    assert error["details"]["current"] == [
        {"source": fleet["same_es200"], "quantityWh": 500},
        {"source": newcomer, "quantityWh": 500},
    ]
    assert len(requests_of(registry.sessions)) == before


def test_a_stranger_cannot_claim_the_buyers_consumption(
    registry: Registry, stranger_account: LocalAccount, fleet: dict[str, int]
) -> None:
    error = refused(
        registry.client.get(
            f"{V1}/claims/advanced/typed-data",
            params={"from": stranger_account.address, "target": fleet["consumption"]},
        ),
        422,
        "registry_rule_violation",
    )
    assert error["details"]["rule"] == "CertificateRegistryUnauthorized"


@pytest.mark.parametrize(
    ("target", "code", "status"),
    [
        ("same_es100", "consumption_slice_not_claimable", 422),
        ("unknown", "consumption_slice_not_claimable", 422),
    ],
)
def test_a_target_that_is_not_an_active_consumption_slice_is_refused(
    registry: Registry,
    buyer_account: LocalAccount,
    fleet: dict[str, int],
    target: str,
    code: str,
    status: int,
) -> None:
    slice_id = fleet.get(target, 10**9)
    error = refused(
        registry.client.get(
            f"{V1}/claims/advanced/typed-data",
            params={"from": buyer_account.address, "target": slice_id},
        ),
        status,
        code,
    )
    assert error["details"]["field"] == "target"


def test_a_consumption_certificate_the_mirror_has_not_seen_is_a_conflict(
    registry: Registry, buyer_account: LocalAccount, fleet: dict[str, int]
) -> None:
    late = issue(registry, buyer_account.address, "consumption", 100, H)
    error = refused(
        registry.client.get(
            f"{V1}/claims/advanced/typed-data",
            params={"from": buyer_account.address, "target": late},
        ),
        409,
        "consumption_certificate_not_indexed",
    )
    assert error["details"]["certificateId"] == late


@pytest.mark.parametrize(
    ("field", "value"), [("fuelCode", "solar"), ("techCode", "TC999"), ("countryCode", "kenya")]
)
def test_a_preference_that_is_no_known_code_is_refused_not_ignored(
    registry: Registry, buyer_account: LocalAccount, fleet: dict[str, int], field: str, value: str
) -> None:
    params = {"from": buyer_account.address, "target": fleet["consumption"], field: value}
    error = refused(
        registry.client.get(f"{V1}/claims/advanced/typed-data", params=params), 422, "unknown_code"
    )
    assert (error["details"]["field"], error["details"]["value"]) == (field, value)
