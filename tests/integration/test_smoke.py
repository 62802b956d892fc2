from __future__ import annotations

from typing import Any

from tests.integration.chain import Chain


def test_deployment_grants_issuer_and_trusts_forwarder(
    chain: Chain, deployment: dict[str, Any], issuer: str, stranger: str
) -> None:
    role = chain.registry.functions.ISSUER_ROLE().call()
    assert chain.registry.functions.hasRole(role, issuer).call()
    assert not chain.registry.functions.hasRole(role, stranger).call()
    assert chain.registry.functions.isTrustedForwarder(deployment["forwarder"]).call()
    assert chain.registry.functions.nextId().call() == 1
