"""Deploy the registry to a network and keep its record in deployments/<network>.json."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from granular.adapters.chain.client import (
    ChainConnection,
    ChainUnavailable,
    connect,
    redact_url,
)
from granular.adapters.chain.deployer import DeployedContracts, deploy_contracts, has_code
from granular.adapters.chain.keys import Signer, signing_account
from granular.domain.addresses import checksum_address
from granular.errors import ConfigurationError, GranularError, ValidationError

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


class DeploymentMissing(ConfigurationError):
    code = "deployment_missing"

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"no {path}; run `granular deploy --network {path.stem}` first", {"path": str(path)}
        )


class DeploymentMismatch(ConfigurationError):
    """The record does not describe the chain the RPC serves: wrong chain or no code."""

    code = "deployment_mismatch"


@dataclass(frozen=True, slots=True)
class ChainTarget:
    """A checked deployment: the RPC answers with the record's chain id, the registry has
    code there, and the issuer key is loaded. `rpc_url` may hold an API key: never log it
    unredacted (adapters.chain.client.redact_url)."""

    rpc_url: str
    chain_id: int
    registry: str
    record: dict[str, Any]
    account: Signer | None = field(repr=False)  # None: opened to read, not to send

    @property
    def issuer(self) -> str:
        """The signing key's address, or the recorded issuer when opened to read."""
        address: str = (
            self.account.address if self.account is not None else str(self.record["issuer"])
        )
        return address


def open_chain(
    *,
    rpc_url: str,
    record_path: Path,
    keystore: Path | None,
    password_file: Path | None,
    signing: bool = True,
) -> ChainTarget:
    """Connect and check everything before the daemon starts; each failure is one
    GranularError whose message is the one line the CLI prints:
    no record, an RPC that does not answer, another chain id, no code at the recorded
    address, a keystore that cannot be read or decrypted (or the development key off anvil).
    """
    record = read_record(record_path)
    if record is None:
        raise DeploymentMissing(record_path)
    w3, chain_id = connect(rpc_url)
    if record.get("chainId") != chain_id:
        raise DeploymentMismatch(
            f"{record_path.name} is for chain id {record.get('chainId')}, but "
            f"{redact_url(rpc_url)} is chain id {chain_id}",
            {"recorded": record.get("chainId"), "actual": chain_id},
        )
    registry = checked_address(f"{record_path.name}: address", str(record.get("address")))
    try:
        present = has_code(w3, registry)
    except ChainUnavailable:
        raise
    except Exception as error:  # the RPC died between two calls
        raise ChainUnavailable(rpc_url, type(error).__name__) from None
    if not present:
        raise DeploymentMismatch(
            f"{record_path.name}: no contract code at {registry} on chain id {chain_id}; "
            "deploy again or fix the record",
            {"address": registry, "chainId": chain_id},
        )
    account = (
        signing_account(chain_id=chain_id, keystore=keystore, password_file=password_file)
        if signing
        else None
    )
    return ChainTarget(
        rpc_url=rpc_url, chain_id=chain_id, registry=registry, record=record, account=account
    )


def ensure_deployment(
    *, rpc_url: str, network: str, directory: Path
) -> tuple[dict[str, Any], bool]:
    """The embedded chain's record: reused while its registry is on that chain, else a new
    deployment (anvil's development account, chain 31337 only). True when it deployed."""
    path = deployment_path(directory, network)
    record = read_record(path)
    if record is not None:
        w3, chain_id = connect(rpc_url)
        if record.get("chainId") == chain_id and has_code(w3, str(record.get("address"))):
            return record, False
    return deploy(rpc_url=rpc_url, network=network, directory=directory, force=True), True
