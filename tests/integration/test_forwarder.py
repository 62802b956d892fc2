"""Commands relayed through the GranularForwarder (OpenZeppelin 5.1 ERC2771Forwarder).

A wallet owner signs an EIP-712 ForwardRequest; the relayer sends `execute` and pays the gas;
the registry sees the signer as the caller. Addresses in decoded errors are lower case.
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3
from web3.logs import DISCARD
from web3.types import Wei

from granular.adapters.chain.keys import anvil_account
from tests.integration.chain import Chain

PRODUCTION, CONSUMPTION = 0, 1
ACTIVE, CLAIMED = 1, 3
ISSUER_ROLE = keccak(text="ISSUER_ROLE")
REQUEST_GAS = 300_000
STRANGER_INDEX = 3  # the `stranger` fixture's anvil account

FORWARD_REQUEST_TYPES = {
    "ForwardRequest": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "gas", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint48"},
        {"name": "data", "type": "bytes"},
    ]
}

# chain.events decodes one event type from receipts that carry several; web3 warns on each other.


# ------------------------------------------------------------------ helpers


def low(address: str) -> str:
    return address.lower()


def domain(chain: Chain) -> dict[str, Any]:
    return {
        "name": "GranularForwarder",
        "version": "1",
        "chainId": chain.w3.eth.chain_id,
        "verifyingContract": chain.forwarder.address,
    }


def latest_timestamp(chain: Chain) -> int:
    timestamp: int = chain.w3.eth.get_block("latest")["timestamp"]
    return timestamp


def message(
    chain: Chain,
    from_: str,
    data: str,
    *,
    to: str | None = None,
    nonce: int | None = None,
    deadline: int | None = None,
) -> dict[str, Any]:
    """A ForwardRequest for the registry (by default) with the signer's current nonce."""
    return {
        "from": from_,
        "to": to or chain.registry.address,
        "value": 0,
        "gas": REQUEST_GAS,
        "nonce": chain.forwarder.functions.nonces(from_).call() if nonce is None else nonce,
        "deadline": latest_timestamp(chain) + 3600 if deadline is None else deadline,
        "data": data,
    }


def sign(chain: Chain, signer: LocalAccount, msg: dict[str, Any]) -> bytes:
    signed = signer.sign_typed_data(domain(chain), FORWARD_REQUEST_TYPES, msg)
    return bytes(signed.signature)


def recover(chain: Chain, msg: dict[str, Any], signature: bytes) -> str:
    """Who the forwarder will see as signer of `msg` (what it recovers from the signature)."""
    signable = encode_typed_data(domain(chain), FORWARD_REQUEST_TYPES, msg)
    return str(Account.recover_message(signable, signature=signature))


def request_data(msg: dict[str, Any], signature: bytes) -> tuple[Any, ...]:
    """ForwardRequestData(from, to, value, gas, deadline, data, signature): no nonce."""
    return (
        msg["from"],
        msg["to"],
        msg["value"],
        msg["gas"],
        msg["deadline"],
        msg["data"],
        signature,
    )


def signed_request(
    chain: Chain, signer: LocalAccount, data: str, **overrides: Any
) -> tuple[dict[str, Any], tuple[Any, ...]]:
    msg = message(chain, overrides.pop("from_", signer.address), data, **overrides)
    return msg, request_data(msg, sign(chain, signer, msg))


def execute(chain: Chain, request: tuple[Any, ...], relayer: str) -> Any:
    return chain.send(chain.forwarder.functions.execute(request), relayer)


def relay(chain: Chain, signer: LocalAccount, data: str, relayer: str) -> Any:
    _, request = signed_request(chain, signer, data)
    return execute(chain, request, relayer)


def encode(chain: Chain, function: str, *args: Any) -> str:
    return str(chain.registry.encode_abi(function, args=list(args)))


def issue(chain: Chain, issuer: str, items: list[tuple[str, int, int]]) -> list[int]:
    batch = chain.registry.functions.issueBatch(
        keccak(text=f"batch-{items}"),
        [(who, kind, qty, keccak(text=f"{who}{kind}{qty}")) for who, kind, qty in items],
    )
    receipt = chain.send(batch, issuer)
    return [event.args.certificateId for event in chain.events(receipt, "CertificateIssued")]


def slice_of(chain: Chain, slice_id: int) -> tuple[str, int, int, int, int]:
    owner, kind, state, quantity_wh, certificate_id = chain.registry.functions.sliceOf(
        slice_id
    ).call()
    return owner, kind, state, quantity_wh, certificate_id


def nonce_of(chain: Chain, account: str) -> int:
    nonce: int = chain.forwarder.functions.nonces(account).call()
    return nonce


@pytest.fixture
def stranger_account(stranger: str) -> LocalAccount:
    account = anvil_account(STRANGER_INDEX)
    assert account.address == stranger
    return account


@pytest.fixture
def cert(chain: Chain, issuer: str, owner: str) -> int:
    """One 1000 Wh production certificate held by the owner."""
    (certificate_id,) = issue(chain, issuer, [(owner, PRODUCTION, 1000)])
    return certificate_id


# ------------------------------------------------------------------ relayed commands


def test_forwarder_domain_is_granular_forwarder_version_1(chain: Chain) -> None:
    _, name, version, chain_id, verifying_contract, _, _ = (
        chain.forwarder.functions.eip712Domain().call()
    )
    assert (name, version) == ("GranularForwarder", "1")
    assert (chain_id, verifying_contract) == (chain.w3.eth.chain_id, chain.forwarder.address)


def test_relayed_transfer_moves_the_slice_and_the_relayer_pays(
    chain: Chain,
    cert: int,
    owner: str,
    owner_account: LocalAccount,
    buyer: str,
    relayer: str,
) -> None:
    w3 = chain.w3
    owner, relayer = Web3.to_checksum_address(owner), Web3.to_checksum_address(relayer)
    msg, request = signed_request(chain, owner_account, encode(chain, "transfer", cert, buyer))
    assert chain.forwarder.functions.verify(request).call() is True
    owner_balance = w3.eth.get_balance(owner)
    owner_tx_count = w3.eth.get_transaction_count(owner)
    relayer_balance = w3.eth.get_balance(relayer)

    receipt = execute(chain, request, relayer)

    assert receipt["from"] == relayer
    assert slice_of(chain, cert) == (buyer, PRODUCTION, ACTIVE, 1000, cert)
    (moved,) = chain.events(receipt, "SliceTransferred")
    assert (moved.args.sliceId, moved.args["from"], moved.args.to) == (cert, owner, buyer)
    (executed,) = chain.forwarder.events.ExecutedForwardRequest().process_receipt(
        receipt, errors=DISCARD
    )
    assert (executed.args.signer, executed.args.nonce, executed.args.success) == (owner, 0, True)
    assert nonce_of(chain, owner) == msg["nonce"] + 1
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert fee > 0
    assert w3.eth.get_balance(relayer) == relayer_balance - fee
    assert w3.eth.get_balance(owner) == owner_balance
    assert w3.eth.get_transaction_count(owner) == owner_tx_count
    assert chain.registry.functions.walletOf(owner).call() == [False, 0]
    assert chain.registry.functions.walletOf(buyer).call() == [False, 1]
    assert chain.registry.functions.walletOf(relayer).call() == [False, 0]


def test_relayed_transfer_part_splits_for_the_signer(
    chain: Chain, cert: int, owner: str, owner_account: LocalAccount, buyer: str, relayer: str
) -> None:
    receipt = relay(chain, owner_account, encode(chain, "transferPart", cert, 400, buyer), relayer)

    (split,) = chain.events(receipt, "SliceSplit")
    assert split.args.childSliceIds == [2, 3]
    assert split.args.owners == [buyer, owner]
    assert slice_of(chain, 2) == (buyer, PRODUCTION, ACTIVE, 400, cert)
    assert slice_of(chain, 3) == (owner, PRODUCTION, ACTIVE, 600, cert)


def test_relayed_claim_for_the_signer(
    chain: Chain, issuer: str, owner: str, owner_account: LocalAccount, relayer: str
) -> None:
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, 500), (owner, CONSUMPTION, 500)]
    )

    receipt = relay(chain, owner_account, encode(chain, "claim", production, consumption), relayer)

    (claimed,) = chain.events(receipt, "SliceClaimed")
    assert (claimed.args.claimId, claimed.args.consumptionSliceId) == (production, consumption)
    assert slice_of(chain, production)[2] == CLAIMED
    assert slice_of(chain, consumption)[2] == CLAIMED


def test_relayed_set_operator_and_close_wallet_act_on_the_signers_wallet(
    chain: Chain, owner: str, owner_account: LocalAccount, buyer: str, relayer: str
) -> None:
    relay(chain, owner_account, encode(chain, "setOperator", buyer, True), relayer)
    relay(chain, owner_account, encode(chain, "closeWallet"), relayer)

    registry = chain.registry.functions
    assert registry.isOperator(owner, buyer).call() is True
    assert registry.isOperator(relayer, buyer).call() is False
    assert registry.walletOf(owner).call() == [True, 0]
    assert registry.walletOf(relayer).call() == [False, 0]
    assert nonce_of(chain, owner) == 2


def test_relayed_issue_batch_signed_by_the_issuer(
    chain: Chain, issuer_account: LocalAccount, owner: str, relayer: str
) -> None:
    data = encode(
        chain, "issueBatch", keccak(text="relayed"), [(owner, PRODUCTION, 7, keccak(text="h"))]
    )

    receipt = relay(chain, issuer_account, data, relayer)

    (issued,) = chain.events(receipt, "CertificateIssued")
    assert (issued.args.certificateId, issued.args.owner, issued.args.quantityWh) == (1, owner, 7)


def test_relayed_issue_batch_signed_by_a_holder_reverts_and_keeps_the_nonce(
    chain: Chain, owner: str, owner_account: LocalAccount, relayer: str
) -> None:
    data = encode(
        chain, "issueBatch", keccak(text="relayed"), [(owner, PRODUCTION, 7, keccak(text="h"))]
    )
    _, request = signed_request(chain, owner_account, data)

    # The registry's AccessControlUnauthorizedAccount(owner, ISSUER_ROLE) is not bubbled up:
    # the forwarder's execute reverts with FailedCall() and the nonce is not consumed.
    with chain.reverts("FailedCall"):
        chain.forwarder.functions.execute(request).transact({"from": relayer})
    assert nonce_of(chain, owner) == 0
    assert chain.registry.functions.nextId().call() == 1


def test_the_relayer_itself_has_no_permission_on_the_owners_slice(
    chain: Chain, cert: int, owner: str, relayer: str
) -> None:
    with chain.reverts("CertificateRegistryUnauthorized", low(relayer), low(owner)):
        chain.registry.functions.transfer(cert, relayer).transact({"from": relayer})


# ------------------------------------------------------------------ refused requests


def test_request_signed_by_a_stranger_is_refused(
    chain: Chain,
    cert: int,
    owner: str,
    stranger: str,
    stranger_account: LocalAccount,
    relayer: str,
) -> None:
    _, request = signed_request(
        chain, stranger_account, encode(chain, "transfer", cert, stranger), from_=owner
    )
    assert chain.forwarder.functions.verify(request).call() is False

    with chain.reverts("ERC2771ForwarderInvalidSigner", low(stranger), low(owner)):
        chain.forwarder.functions.execute(request).transact({"from": relayer})
    assert slice_of(chain, cert)[0] == owner
    assert nonce_of(chain, owner) == 0


def test_request_altered_by_the_relayer_is_refused(
    chain: Chain, cert: int, owner: str, owner_account: LocalAccount, buyer: str, relayer: str
) -> None:
    msg, request = signed_request(chain, owner_account, encode(chain, "transfer", cert, buyer))
    signature = request[-1]
    altered = {**msg, "data": encode(chain, "transfer", cert, relayer)}
    seen_signer = recover(chain, altered, signature)
    assert seen_signer != owner

    with chain.reverts("ERC2771ForwarderInvalidSigner", low(seen_signer), low(owner)):
        chain.forwarder.functions.execute(request_data(altered, signature)).transact(
            {"from": relayer}
        )
    assert slice_of(chain, cert)[0] == owner


def test_replayed_request_is_refused(
    chain: Chain,
    issuer: str,
    owner: str,
    owner_account: LocalAccount,
    buyer: str,
    relayer: str,
) -> None:
    # Two slices, so a replay would have something to move if the nonce did not stop it.
    first, second = issue(chain, issuer, [(owner, PRODUCTION, 10), (owner, PRODUCTION, 20)])
    msg, request = signed_request(
        chain, owner_account, encode(chain, "transferPart", first, 4, buyer)
    )
    execute(chain, request, relayer)
    assert nonce_of(chain, owner) == 1
    before = chain.registry.functions.nextId().call()

    # The forwarder hashes the request with the current nonce (1), so the old signature now
    # recovers some other address: the replay reads as a wrong signer.
    seen_signer = recover(chain, {**msg, "nonce": 1}, request[-1])
    assert seen_signer != owner
    with chain.reverts("ERC2771ForwarderInvalidSigner", low(seen_signer), low(owner)):
        chain.forwarder.functions.execute(request).transact({"from": relayer})
    assert chain.forwarder.functions.verify(request).call() is False
    assert nonce_of(chain, owner) == 1
    assert chain.registry.functions.nextId().call() == before
    assert slice_of(chain, second)[0] == owner


def test_request_signed_for_a_future_nonce_is_refused(
    chain: Chain, cert: int, owner: str, owner_account: LocalAccount, buyer: str, relayer: str
) -> None:
    msg, request = signed_request(
        chain, owner_account, encode(chain, "transfer", cert, buyer), nonce=1
    )
    seen_signer = recover(chain, {**msg, "nonce": 0}, request[-1])

    with chain.reverts("ERC2771ForwarderInvalidSigner", low(seen_signer), low(owner)):
        chain.forwarder.functions.execute(request).transact({"from": relayer})


def test_expired_request_is_refused(
    chain: Chain, cert: int, owner: str, owner_account: LocalAccount, buyer: str, relayer: str
) -> None:
    deadline = latest_timestamp(chain) - 1
    _, request = signed_request(
        chain, owner_account, encode(chain, "transfer", cert, buyer), deadline=deadline
    )
    assert chain.forwarder.functions.verify(request).call() is False

    with chain.reverts("ERC2771ForwarderExpiredRequest", deadline):
        chain.forwarder.functions.execute(request).transact({"from": relayer})
    assert slice_of(chain, cert)[0] == owner
    assert nonce_of(chain, owner) == 0


@pytest.mark.parametrize(
    ("deadline_offset", "executed"), [(0, True), (-1, False)], ids=["at_deadline", "1s_after"]
)
def test_deadline_is_inclusive(
    chain: Chain,
    cert: int,
    owner: str,
    owner_account: LocalAccount,
    buyer: str,
    relayer: str,
    deadline_offset: int,
    executed: bool,
) -> None:
    block_time = latest_timestamp(chain) + 100
    _, request = signed_request(
        chain,
        owner_account,
        encode(chain, "transfer", cert, buyer),
        deadline=block_time + deadline_offset,
    )
    chain.w3.provider.make_request("evm_setNextBlockTimestamp", [block_time])  # type: ignore[arg-type]

    # An explicit gas limit skips estimation, so the transaction is mined even if it reverts.
    tx_hash = chain.forwarder.functions.execute(request).transact({"from": relayer, "gas": 500_000})
    receipt = chain.w3.eth.wait_for_transaction_receipt(tx_hash)

    assert chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"] == block_time
    assert receipt["status"] == int(executed)
    assert slice_of(chain, cert)[0] == (buyer if executed else owner)


def test_request_to_a_target_that_does_not_trust_the_forwarder_is_refused(
    chain: Chain, cert: int, owner: str, owner_account: LocalAccount, buyer: str, relayer: str
) -> None:
    target = chain.forwarder.address
    _, request = signed_request(
        chain, owner_account, encode(chain, "transfer", cert, buyer), to=target
    )

    with chain.reverts("ERC2771UntrustfulTarget", low(target), low(chain.forwarder.address)):
        chain.forwarder.functions.execute(request).transact({"from": relayer})


def test_request_with_a_mismatched_value_is_refused(
    chain: Chain, cert: int, owner_account: LocalAccount, buyer: str, relayer: str
) -> None:
    _, request = signed_request(chain, owner_account, encode(chain, "transfer", cert, buyer))

    with chain.reverts("ERC2771ForwarderMismatchedValue", 0, 1):
        chain.forwarder.functions.execute(request).transact({"from": relayer, "value": Wei(1)})


def test_relayed_command_that_the_registry_refuses_keeps_the_nonce(
    chain: Chain, cert: int, owner: str, owner_account: LocalAccount, buyer: str, relayer: str
) -> None:
    # Valid signature, but the registry reverts (1001 Wh of a 1000 Wh slice): FailedCall().
    _, request = signed_request(
        chain, owner_account, encode(chain, "transferPart", cert, 1001, buyer)
    )
    assert chain.forwarder.functions.verify(request).call() is True

    with chain.reverts("FailedCall"):
        chain.forwarder.functions.execute(request).transact({"from": relayer})
    assert nonce_of(chain, owner) == 0
    assert slice_of(chain, cert)[0] == owner
