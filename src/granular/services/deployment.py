"""Deploy the registry to a network and keep its record in deployments/<network>.json."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from granular.adapters.chain.client import ChainConnection, connect
from granular.adapters.chain.deployer import DeployedContracts, deploy_contracts, has_code
from granular.adapters.chain.keys import Signer, signing_account
from granular.domain.addresses import checksum_address
from granular.errors import GranularError, ValidationError

_NETWORK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class DeploymentRefused(GranularError):
    code = "deployment_refused"


def checked_address(field: str, value: str) -> str:
    return checksum_address(field, value)  # refuses a bad EIP-55 checksum, never repairs it


def deployment_path(directory: Path, network: str) -> Path:
    if not _NETWORK.match(network):
        raise ValidationError(
            f"network: {network!r} must be 1-64 letters, digits, '-' or '_' (it names a file)"
        )
    return directory / f"{network}.json"


def to_record(network: str, deployed: DeployedContracts) -> dict[str, Any]:
    fields = asdict(deployed)
    return {
        "network": network,
        "chainId": fields["chain_id"],
        "address": fields["address"],
        "forwarder": fields["forwarder"],
        "blockNumber": fields["block_number"],
        "transactionHash": fields["transaction_hash"],
        "deployer": fields["deployer"],
        "issuer": fields["issuer"],
        "artifactSha256": fields["artifact_sha256"],
    }


def read_record(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return record


def check_existing(w3: ChainConnection, chain_id: int, path: Path, *, force: bool) -> None:
    """Refuse a record of another chain, and one whose code is still there unless forced."""
    record = read_record(path)
    if record is None:
        return
    if record.get("chainId") != chain_id:
        raise DeploymentRefused(
            f"{path.name} is for chain id {record.get('chainId')}, but the RPC is chain id "
            f"{chain_id}; use another --network name"
        )
    if not force and has_code(w3, record["address"]):
        raise DeploymentRefused(
            f"{path.name}: the registry at {record['address']} is still on chain {chain_id}; "
            "pass --force to deploy a new one"
        )


def deploy(
    *,
    rpc_url: str,
    network: str,
    directory: Path,
    issuer: str | None = None,
    force: bool = False,
    keystore: Path | None = None,
    password_file: Path | None = None,
    account: Signer | None = None,
) -> dict[str, Any]:
    """Deploy forwarder and registry, grant ISSUER_ROLE, write and return the record."""
    path = deployment_path(directory, network)
    issuer_address = checked_address("--issuer", issuer) if issuer else None
    w3, chain_id = connect(rpc_url)
    check_existing(w3, chain_id, path, force=force)
    if account is None:
        account = signing_account(chain_id=chain_id, keystore=keystore, password_file=password_file)
    deployed = deploy_contracts(w3, account, issuer=issuer_address or account.address)
    record = to_record(network, deployed)
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record
