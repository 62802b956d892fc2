"""Deploying the forwarder and the registry, and reading back what is on chain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import Web3Exception

from granular.adapters.chain.artifacts import Artifact
from granular.adapters.chain.client import ChainUnavailable
from granular.errors import GranularError

REGISTRY = "CertificateRegistry"
FORWARDER = "GranularForwarder"
ISSUER_ROLE = Web3.keccak(text="ISSUER_ROLE")
_GRANT_ROLE_GAS = 80_000


class DeploymentFailed(GranularError):
    code = "deployment_failed"


class InsufficientFunds(GranularError):
    code = "insufficient_funds"

    def __init__(self, address: str, balance_wei: int, needed_wei: int) -> None:
        super().__init__(
            f"deployer {address} holds {balance_wei} wei; deploying needs about {needed_wei} wei"
        )


@dataclass(frozen=True, slots=True)
class DeployedContracts:
    chain_id: int
    address: str
    forwarder: str
    block_number: int
    transaction_hash: str
    deployer: str
    issuer: str
    artifact_sha256: str


def has_code(w3: Web3, address: str) -> bool:
    return len(w3.eth.get_code(Web3.to_checksum_address(address))) > 0


class _Sender:
    """Signs locally and waits for each receipt; deployment happens before any outbox exists."""

    def __init__(self, w3: Web3, account: LocalAccount) -> None:
        self.w3 = w3
        self.account = account
        self.nonce = int(w3.eth.get_transaction_count(account.address, "pending"))

    def send(self, tx: dict[str, Any], what: str) -> dict[str, Any]:
        tx = {**tx, "from": self.account.address, "nonce": self.nonce}
        signed = self.account.sign_transaction(tx)
        try:
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = dict(self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=300))
        except Web3Exception as error:
            raise DeploymentFailed(f"{what}: {error}") from None
        except ValueError as error:  # JSON-RPC errors surface as ValueError in web3
            raise DeploymentFailed(f"{what}: {_rpc_message(error)}") from None
        self.nonce += 1
        if receipt["status"] != 1:
            raise DeploymentFailed(f"{what}: transaction {HexBytes(tx_hash).to_0x_hex()} reverted")
        return receipt


def _rpc_message(error: ValueError) -> str:
    arg = error.args[0] if error.args else error
    return str(arg.get("message", arg)) if isinstance(arg, dict) else str(arg)


def estimate_cost_wei(w3: Web3, account: LocalAccount, issuer: str) -> int:
    """An upper estimate of what deploy_contracts spends, to refuse an unfunded key early."""
    forwarder = Artifact.load(FORWARDER)
    registry = Artifact.load(REGISTRY)
    sender = account.address
    gas = w3.eth.estimate_gas({"from": sender, "data": HexBytes(forwarder.bytecode)})
    constructor = w3.eth.contract(abi=registry.abi, bytecode=registry.bytecode).constructor(
        sender, sender
    )
    gas += w3.eth.estimate_gas({"from": sender, "data": HexBytes(constructor.data_in_transaction)})
    gas += _GRANT_ROLE_GAS if issuer != sender else 0
    return gas * _fee_per_gas_wei(w3)


def _fee_per_gas_wei(w3: Web3) -> int:
    fees = _fee_fields(w3)
    return int(fees.get("gasPrice", fees.get("maxFeePerGas", 0)))


def _fee_fields(w3: Web3) -> dict[str, Any]:
    """gasPrice on a chain without EIP-1559; otherwise twice the *next* block's base fee
    (the last entry of eth_feeHistory) plus the node's suggested tip, which still holds
    when the latest block's base fee is no guide to the next one."""
    if w3.eth.get_block("latest").get("baseFeePerGas") is None:
        return {"gasPrice": w3.eth.gas_price}
    next_base_fee = int(w3.eth.fee_history(1, "latest")["baseFeePerGas"][-1])
    tip = int(w3.eth.max_priority_fee)
    return {"maxFeePerGas": 2 * next_base_fee + tip, "maxPriorityFeePerGas": tip}


def deploy_contracts(w3: Web3, account: LocalAccount, *, issuer: str) -> DeployedContracts:
    """Deploy the forwarder, then the registry (admin: the deployer), then grant ISSUER_ROLE.

    An RPC that stops answering part-way ends in ChainUnavailable, whose message names the
    host only (the transport's own message would repeat the URL, API key and all)."""
    url = str(getattr(w3.provider, "endpoint_uri", "") or "?")
    try:
        return _deploy_contracts(w3, account, issuer=issuer)
    except ChainUnavailable as error:  # a Web3 of client.web3_for says so itself
        raise ChainUnavailable(url, f"{error.reason} while deploying") from None
    except (requests.RequestException, OSError) as error:  # any other Web3
        raise ChainUnavailable(url, f"{type(error).__name__} while deploying") from None


def _deploy_contracts(w3: Web3, account: LocalAccount, *, issuer: str) -> DeployedContracts:
    issuer = Web3.to_checksum_address(issuer)
    forwarder_artifact = Artifact.load(FORWARDER)
    registry_artifact = Artifact.load(REGISTRY)
    needed = estimate_cost_wei(w3, account, issuer)
    balance = w3.eth.get_balance(account.address)
    if balance < needed:
        raise InsufficientFunds(account.address, balance, needed)

    sender = _Sender(w3, account)
    chain_id = w3.eth.chain_id
    base: dict[str, Any] = {"from": account.address, "chainId": chain_id, **_fee_fields(w3)}
    forwarder_tx = (
        w3.eth.contract(abi=forwarder_artifact.abi, bytecode=forwarder_artifact.bytecode)
        .constructor()
        .build_transaction(base)
    )
    forwarder = sender.send(dict(forwarder_tx), "deploying the forwarder")["contractAddress"]

    registry_tx = (
        w3.eth.contract(abi=registry_artifact.abi, bytecode=registry_artifact.bytecode)
        .constructor(account.address, forwarder)
        .build_transaction(base)
    )
    receipt = sender.send(dict(registry_tx), "deploying the registry")
    address = receipt["contractAddress"]

    registry = w3.eth.contract(address=address, abi=registry_artifact.abi)
    grant = registry.functions.grantRole(ISSUER_ROLE, issuer).build_transaction(
        {**base, "nonce": sender.nonce}
    )
    sender.send(dict(grant), f"granting ISSUER_ROLE to {issuer}")

    return DeployedContracts(
        chain_id=chain_id,
        address=address,
        forwarder=forwarder,
        block_number=int(receipt["blockNumber"]),
        transaction_hash=HexBytes(receipt["transactionHash"]).to_0x_hex(),
        deployer=account.address,
        issuer=issuer,
        artifact_sha256=registry_artifact.sha256,
    )
