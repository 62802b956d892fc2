"""The registry command routes without a chain: a clear 500 naming the missing configuration,
and bodies that do not fit the schema refused before any chain call."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from granular.services.commands import RegistryCommands
from tests.api.conftest import Keys

V1 = "/interface/registry/v1"
OWNER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_without_a_chain_the_commands_say_they_are_not_configured(
    client: TestClient, keys: Keys
) -> None:
    assert client.get(f"{V1}/requests/1").status_code == 401
    response = client.get(f"{V1}/requests/1", headers=keys.viewer)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "configuration_error"
    assert "not configured" in response.json()["error"]["message"]


class NoChain:
    """A read port that fails the test if anything reaches for the chain."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the chain was asked for {name}")


def test_a_body_that_does_not_fit_the_schema_is_422(client: TestClient, keys: Keys) -> None:
    client.app.state.registry_commands = RegistryCommands(  # type: ignore[attr-defined]
        chain_id=31337,
        registry="0x" + "1" * 40,
        forwarder="0x" + "2" * 40,
        relayer=OWNER,
        view=NoChain(),
        relay_view=NoChain(),
        certificates=NoChain(),
    )
    body = {
        "from": OWNER,
        "nonce": 0,
        "deadline": 1,
        "signature": "0x1234",  # not 65 bytes
        "to": OWNER,
    }
    response = client.post(f"{V1}/slices/1/transfer", json=body, headers=keys.buyer)
    assert response.status_code == 422
    fields = {p["field"] for p in response.json()["error"]["details"]["problems"]}
    assert "signature" in fields
    response = client.post(
        f"{V1}/slices/1/transfer", json={**body, "quantityWh": 0}, headers=keys.buyer
    )
    assert response.status_code == 422
    well_formed = {**body, "signature": "0x" + "00" * 65}
    viewer = client.post(f"{V1}/slices/1/transfer", json=well_formed, headers=keys.viewer)
    assert viewer.status_code == 403  # a viewer cannot make the worker pay for anything
    response = client.post(
        f"{V1}/certificates",
        headers=keys.issuer,
        json={"idempotencyKey": "k", "owner": OWNER, "kind": "sunlight", "quantityWh": 1},
    )
    assert response.status_code == 422
