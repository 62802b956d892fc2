"""A real anvil for the session, the registry deployed by the deploy service, and a
snapshot around every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from granular.adapters.chain.anvil import Anvil
from granular.adapters.chain.artifacts import Artifact, ErrorDecoder
from granular.adapters.chain.client import connect
from granular.adapters.chain.keys import anvil_account
from granular.services.deployment import deploy
from tests.integration.chain import Chain


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    log = tmp_path_factory.mktemp("anvil") / "anvil.log"
    with Anvil(log=log) as node:
        yield node


@pytest.fixture(scope="session")
def w3(anvil: Anvil) -> Web3:
    web3, _ = connect(anvil.url)
    return web3


@pytest.fixture(scope="session")
def deployment(anvil: Anvil, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("deployments")
    return deploy(rpc_url=anvil.url, network="test", directory=directory)


@pytest.fixture(scope="session")
def chain(w3: Web3, deployment: dict[str, Any]) -> Chain:
    registry_artifact = Artifact.load("CertificateRegistry")
    forwarder_artifact = Artifact.load("GranularForwarder")
    return Chain(
        w3=w3,
        registry=w3.eth.contract(address=deployment["address"], abi=registry_artifact.abi),
        forwarder=w3.eth.contract(address=deployment["forwarder"], abi=forwarder_artifact.abi),
        decoder=ErrorDecoder(registry_artifact.abi + forwarder_artifact.abi),
    )


@pytest.fixture(autouse=True)
def _evm_snapshot(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that uses the chain runs inside evm_snapshot / evm_revert."""
    if "w3" not in request.fixturenames and "chain" not in request.fixturenames:
        yield
        return
    web3: Web3 = request.getfixturevalue("w3")
    call = web3.provider.make_request
    next_base_fee = call("eth_feeHistory", ["0x1", "latest", []])["result"]["baseFeePerGas"][-1]  # type: ignore[arg-type]
    snapshot = call("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    yield
    reverted = call("evm_revert", [snapshot])  # type: ignore[arg-type]
    assert reverted["result"] is True
    # evm_revert rewinds blocks but not anvil's fee manager: a test that raised the base
    # fee would leave the next block priced from its own last block.
    call("anvil_setNextBlockBaseFeePerGas", [next_base_fee])  # type: ignore[arg-type]


def _account(index: int) -> LocalAccount:
    return anvil_account(index)


@pytest.fixture(scope="session")
def issuer_account() -> LocalAccount:
    return _account(0)


@pytest.fixture(scope="session")
def issuer(issuer_account: LocalAccount) -> str:
    return issuer_account.address


@pytest.fixture(scope="session")
def owner_account() -> LocalAccount:
    return _account(1)


@pytest.fixture(scope="session")
def owner(owner_account: LocalAccount) -> str:
    return owner_account.address


@pytest.fixture(scope="session")
def buyer() -> str:
    return _account(2).address


@pytest.fixture(scope="session")
def stranger() -> str:
    return _account(3).address


@pytest.fixture(scope="session")
def relayer() -> str:
    return _account(4).address
