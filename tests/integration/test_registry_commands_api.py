"""Registry commands through HTTP on a real anvil, on SQLite and PostgreSQL: the wallet owner
signs what `typed-data` serves, the API checks and queues it, the outbox relays it through
the GranularForwarder, and the chain shows the result. Refusals are 4xx before anything is
stored: wrong signer, replay, expiry, closed wallet, 1 Wh over, a Removed slice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.anvil import Anvil
from granular.adapters.chain.forwarder import ChainRegistryView, sign_wallet_name
from granular.adapters.chain.keys import anvil_account
from granular.api.app import create_app
from granular.services.accounts import create_api_key
from granular.services.commands import RegistryCommands
from granular.services.outbox import OutboxSender
from tests.integration.chain import Chain
from tests.integration.outbox_helpers import (  # _close_senders: an autouse fixture
    CHAIN_ID,
    _close_senders,  # noqa: F401
    all_final,
    drive,
    make_sender,
    requests_of,
)

V1 = "/interface/registry/v1"
PRODUCTION, CONSUMPTION = 0, 1
NONE, ACTIVE, REMOVED, CLAIMED, WITHDRAWN = range(5)
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def signature_of(account: LocalAccount, typed: dict[str, Any]) -> str:
    """Sign the served document exactly as a wallet would (eth_signTypedData_v4)."""
    signed = Account.sign_typed_data(account.key, full_message=typed)
    return "0x" + bytes(signed.signature).hex()


@dataclass
class Registry:
    client: TestClient
    chain: Chain
    sender: OutboxSender
    sessions: sessionmaker[Session]
    issuer_key: dict[str, str]
    buyer_key: dict[str, str]

    def typed(self, path: str, **params: Any) -> dict[str, Any]:
        params = {k.rstrip("_"): v for k, v in params.items() if v is not None}
        response = self.client.get(f"{V1}{path}/typed-data", params=params)
        assert response.status_code == 200, response.text
        typed: dict[str, Any] = response.json()["typedData"]
        return typed

    def signed(self, account: LocalAccount, typed: dict[str, Any], **fields: Any) -> dict[str, Any]:
        message = typed["message"]
        return {
            "from": message["from"],
            "nonce": message["nonce"],
            "deadline": message["deadline"],
            "gas": message["gas"],
            "signature": signature_of(account, typed),
            **fields,
        }

    def post(self, path: str, body: dict[str, Any], status: int = 202) -> dict[str, Any]:
        response = self.client.post(f"{V1}{path}", json=body)
        assert response.status_code == status, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def settle(self) -> None:
        drive(self.sender, lambda: all_final(self.sessions))

    def request(self, request_id: int) -> dict[str, Any]:
        response = self.client.get(f"{V1}/requests/{request_id}")
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def confirmed(self, accepted: dict[str, Any]) -> dict[str, Any]:
        self.settle()
        found = self.request(accepted["requestId"])
        assert found["state"] == "confirmed", found
        assert found["txHash"]
        return found

    def slice(self, slice_id: int) -> tuple[str, int, int, int, int]:
        owner, kind, state, quantity_wh, certificate_id = self.chain.registry.functions.sliceOf(
            slice_id
        ).call()
        return owner, kind, state, quantity_wh, certificate_id

    def issue(self, owner: str, kind: str, quantity_wh: int, key: str) -> int:
        before: int = self.chain.registry.functions.nextId().call()
        body = {
            "idempotencyKey": key,
            "owner": owner,
            "kind": kind,
            "quantityWh": quantity_wh,
            "header": {"deviceId": "site-1", "kind": kind, "quantityWh": quantity_wh},
        }
        response = self.client.post(f"{V1}/certificates", json=body, headers=self.issuer_key)
        assert response.status_code == 202, response.text
        self.confirmed(response.json())
        return before

    def transfer(
        self, account: LocalAccount, slice_id: int, to: str, quantity_wh: int | None = None
    ) -> dict[str, Any]:
        typed = self.typed(
            f"/slices/{slice_id}/transfer", from_=account.address, to=to, quantityWh=quantity_wh
        )
        body = self.signed(account, typed, to=to)
        if quantity_wh is not None:
            body["quantityWh"] = quantity_wh
        return self.post(f"/slices/{slice_id}/transfer", body)


@pytest.fixture
def registry(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
) -> Iterator[Registry]:
    view = ChainRegistryView(chain.w3, chain.registry.address, chain.forwarder.address)
    app = create_app(sessions=sessions, clock=lambda: datetime.now(UTC))
    app.state.registry_commands = RegistryCommands(
        chain_id=CHAIN_ID,
        registry=chain.registry.address,
        forwarder=chain.forwarder.address,
        relayer=issuer_account.address,
        view=view,
        relay_view=view,
        certificates=view,
    )

    def key(organization: str, role: str) -> dict[str, str]:
        created = create_api_key(
            sessions=sessions, organization=organization, role=role, label=None, now=NOW
        )
        return {"Authorization": f"Bearer {created.key}"}

    with TestClient(app, raise_server_exceptions=False) as client:
        buyer_key = key("Buyer Ltd", "buyer")
        # Every route needs an API key; a platform's key hands over what owners signed.
        client.headers.update(buyer_key)
        yield Registry(
            client=client,
            chain=chain,
            sender=make_sender(engine, anvil.url, issuer_account),
            sessions=sessions,
            issuer_key=key("Registry", "issuer"),
            buyer_key=buyer_key,
        )


@pytest.fixture
def buyer_account() -> LocalAccount:
    return anvil_account(2)


@pytest.fixture
def stranger_account() -> LocalAccount:
    return anvil_account(3)


def refused(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


# ------------------------------------------------------------------ the ETT §4.1 examples


def test_split_1700_into_1200_250_150_100_then_700_500_by_transfers_of_parts(
    registry: Registry, owner_account: LocalAccount, buyer: str, stranger: str, relayer: str
) -> None:
    owner = owner_account.address
    certificate = registry.issue(owner, "production", 1700, "ett-4.1")
    assert registry.slice(certificate) == (owner, PRODUCTION, ACTIVE, 1700, certificate)

    registry.confirmed(registry.transfer(owner_account, certificate, buyer, 250))
    registry.confirmed(registry.transfer(owner_account, certificate + 2, stranger, 150))
    registry.confirmed(registry.transfer(owner_account, certificate + 4, relayer, 100))
    c = certificate
    assert [registry.slice(c + i) for i in range(1, 7)] == [
        (buyer, PRODUCTION, ACTIVE, 250, c),
        (owner, PRODUCTION, REMOVED, 1450, c),
        (stranger, PRODUCTION, ACTIVE, 150, c),
        (owner, PRODUCTION, REMOVED, 1300, c),
        (relayer, PRODUCTION, ACTIVE, 100, c),
        (owner, PRODUCTION, ACTIVE, 1200, c),
    ]

    accepted = registry.transfer(owner_account, c + 6, buyer, 500)
    found = registry.confirmed(accepted)
    assert found["kind"] == "transfer" and found["signer"] == owner
    assert registry.slice(c + 7) == (buyer, PRODUCTION, ACTIVE, 500, c)
    assert registry.slice(c + 8) == (owner, PRODUCTION, ACTIVE, 700, c)
    active = [registry.slice(c + i) for i in range(9)]
    assert sum(q for _, _, state, q, _ in active if state != REMOVED) == 1700
    # The relayer paid: the owner sent no transaction of its own.
    assert registry.chain.w3.eth.get_transaction_count(owner) == 0
    tx = registry.chain.w3.eth.get_transaction(found["txHash"])
    assert (tx["from"], tx["to"]) == (registry.sender.signer, registry.chain.forwarder.address)


def test_claim_example_claims_the_smaller_side_and_splits_the_other(
    registry: Registry, buyer_account: LocalAccount
) -> None:
    buyer = buyer_account.address
    production = registry.issue(buyer, "production", 500, "p-500")
    consumption = registry.issue(buyer, "consumption", 600, "c-600")

    typed = registry.typed("/claims/slices", from_=buyer, source=production, target=consumption)
    body = registry.signed(buyer_account, typed, source=production, target=consumption)
    registry.confirmed(registry.post("/claims/slices", body))

    c = consumption
    assert registry.slice(production) == (buyer, PRODUCTION, CLAIMED, 500, production)
    assert registry.slice(c) == (buyer, CONSUMPTION, REMOVED, 600, c)
    assert registry.slice(c + 1) == (buyer, CONSUMPTION, CLAIMED, 500, c)
    assert registry.slice(c + 2) == (buyer, CONSUMPTION, ACTIVE, 100, c)

    # An equal pair with an explicit quantity: claimPart of part of each side.
    more = registry.issue(buyer, "production", 300, "p-300")
    typed = registry.typed("/claims/slices", from_=buyer, source=more, target=c + 2, quantityWh=60)
    body = registry.signed(buyer_account, typed, source=more, target=c + 2, quantityWh=60)
    registry.confirmed(registry.post("/claims/slices", body))
    assert registry.slice(more + 1) == (buyer, PRODUCTION, CLAIMED, 60, more)
    assert registry.slice(more + 2) == (buyer, PRODUCTION, ACTIVE, 240, more)


def _list_signed(
    registry: Registry, account: LocalAccount, transfers: list[dict[str, Any]]
) -> dict[str, Any]:
    """What typed-data serves for a list, signed once, and the body that sends it."""
    items = [
        ":".join(str(v) for v in (t["sliceId"], t["to"], t.get("quantityWh")) if v is not None)
        for t in transfers
    ]
    response = registry.client.get(
        f"{V1}/slices/transfer/typed-data", params={"from": account.address, "transfer": items}
    )
    assert response.status_code == 200, response.text
    typed = response.json()["typedData"]
    return registry.signed(account, typed, transfers=transfers)


def test_a_list_of_transfers_is_signed_once_and_sent_as_one_transfer_batch(
    registry: Registry, owner_account: LocalAccount, buyer: str, stranger: str
) -> None:
    owner = owner_account.address
    first = registry.issue(owner, "production", 10, "a")
    second = registry.issue(owner, "production", 20, "b")
    transfers = [
        {"sliceId": first, "to": buyer},
        {"sliceId": second, "to": stranger, "quantityWh": 5},
    ]
    body = _list_signed(registry, owner_account, transfers)

    found = registry.confirmed(registry.post("/slices/transfer", body))

    assert found["kind"] == "transfer_list" and len(found["transactions"]) == 1
    assert registry.slice(first)[0] == buyer
    assert registry.slice(second + 1)[:4] == (stranger, PRODUCTION, ACTIVE, 5)
    assert registry.slice(second + 2)[:4] == (owner, PRODUCTION, ACTIVE, 15)
    assert registry.chain.forwarder.functions.nonces(owner).call() == 1
    tx = registry.chain.w3.eth.get_transaction(found["txHash"])
    _, call = registry.chain.forwarder.decode_function_input(tx["input"])
    name, _ = registry.chain.registry.decode_function_input(call["request"]["data"])
    assert name.fn_name == "transferBatch"


def _fields(account: LocalAccount, typed: dict[str, Any]) -> dict[str, Any]:
    message = typed["message"]
    return {
        "nonce": message["nonce"],
        "deadline": message["deadline"],
        "gas": message["gas"],
        "signature": signature_of(account, typed),
    }


def test_a_second_command_signed_while_the_first_is_in_flight_takes_the_next_nonce(
    registry: Registry, owner_account: LocalAccount, buyer: str
) -> None:
    owner = owner_account.address
    first = registry.issue(owner, "production", 10, "a")
    second = registry.issue(owner, "production", 20, "b")
    one = registry.transfer(owner_account, first, buyer)
    two = registry.transfer(owner_account, second, buyer)  # nonce 1: the first is unsent

    registry.settle()
    assert registry.request(one["requestId"])["nonce"] == 0
    assert registry.request(two["requestId"])["nonce"] == 1
    assert registry.request(two["requestId"])["state"] == "confirmed"
    assert registry.slice(first)[0] == registry.slice(second)[0] == buyer


def test_an_operator_moves_the_owners_slice_with_its_own_signature(
    registry: Registry, owner_account: LocalAccount, buyer_account: LocalAccount, stranger: str
) -> None:
    owner, operator = owner_account.address, buyer_account.address
    certificate = registry.issue(owner, "production", 100, "op")
    before = registry.client.get(
        f"{V1}/slices/{certificate}/transfer/typed-data",
        params={"from": operator, "to": stranger},
    )
    refused(before, 422, "registry_rule_violation")

    typed = registry.typed(f"/wallets/{owner}/operators", operator=operator, approved="true")
    body = registry.signed(owner_account, typed, operator=operator, approved=True)
    registry.confirmed(registry.post(f"/wallets/{owner}/operators", body))
    assert registry.chain.registry.functions.isOperator(owner, operator).call() is True

    registry.confirmed(registry.transfer(buyer_account, certificate, stranger))
    assert registry.slice(certificate)[0] == stranger


def test_the_issuer_issues_and_withdraws_a_slice_and_a_certificate(
    registry: Registry, owner_account: LocalAccount, buyer: str
) -> None:
    owner = owner_account.address
    lone = registry.issue(owner, "production", 40, "lone")
    response = registry.client.delete(f"{V1}/slices/{lone}", headers=registry.issuer_key)
    assert response.status_code == 202, response.text
    registry.confirmed(response.json())
    assert registry.slice(lone)[2] == WITHDRAWN

    split = registry.issue(owner, "production", 90, "split")
    registry.confirmed(registry.transfer(owner_account, split, buyer, 30))
    response = registry.client.delete(f"{V1}/certificates/{split}", headers=registry.issuer_key)
    assert response.status_code == 202, response.text
    found = registry.confirmed(response.json())
    assert [c["sliceId"] for c in found["commands"]] == [split + 1, split + 2]
    assert [registry.slice(split + i)[2] for i in range(3)] == [REMOVED, WITHDRAWN, WITHDRAWN]


def test_only_the_issuer_issues_or_withdraws(registry: Registry, owner: str) -> None:
    body = {
        "idempotencyKey": "x",
        "owner": owner,
        "kind": "production",
        "quantityWh": 1,
        "dataHash": "0x" + "ab" * 32,
    }
    response = registry.client.post(f"{V1}/certificates", json=body, headers=registry.buyer_key)
    refused(response, 403, "forbidden")
    no_key = {"Authorization": ""}
    refused(
        registry.client.post(f"{V1}/certificates", json=body, headers=no_key),
        401,
        "unauthenticated",
    )
    refused(registry.client.delete(f"{V1}/slices/1", headers=registry.buyer_key), 403, "forbidden")
    assert requests_of(registry.sessions) == []


def test_issuing_twice_with_one_key_is_one_certificate(registry: Registry, owner: str) -> None:
    body = {
        "idempotencyKey": "once",
        "owner": owner,
        "kind": "consumption",
        "quantityWh": 7,
        "dataHash": "0x" + "cd" * 32,
    }
    first = registry.client.post(f"{V1}/certificates", json=body, headers=registry.issuer_key)
    again = registry.client.post(f"{V1}/certificates", json=body, headers=registry.issuer_key)
    assert first.status_code == again.status_code == 202
    assert first.json()["requestId"] == again.json()["requestId"]
    registry.confirmed(first.json())
    assert registry.chain.registry.functions.nextId().call() == 2


# ------------------------------------------------------------------ refusals


def test_a_request_signed_by_someone_else_is_refused_and_nothing_is_stored(
    registry: Registry, owner_account: LocalAccount, stranger_account: LocalAccount
) -> None:
    owner = owner_account.address
    certificate = registry.issue(owner, "production", 100, "mine")
    typed = registry.typed(
        f"/slices/{certificate}/transfer", from_=owner, to=stranger_account.address
    )
    body = registry.signed(stranger_account, typed, to=stranger_account.address)

    error = refused(
        registry.client.post(f"{V1}/slices/{certificate}/transfer", json=body), 403, "wrong_signer"
    )
    assert error["details"]["recovered"] == stranger_account.address
    assert len(requests_of(registry.sessions)) == 1  # the issuance only
    assert registry.slice(certificate)[0] == owner


def test_a_signature_over_other_fields_is_refused(
    registry: Registry, owner_account: LocalAccount, buyer: str, stranger: str
) -> None:
    owner = owner_account.address
    certificate = registry.issue(owner, "production", 100, "mine")
    typed = registry.typed(f"/slices/{certificate}/transfer", from_=owner, to=buyer)
    body = registry.signed(owner_account, typed, to=stranger)  # the relayer swaps the receiver

    refused(
        registry.client.post(f"{V1}/slices/{certificate}/transfer", json=body), 403, "wrong_signer"
    )


def test_a_stranger_signing_for_itself_is_refused_by_the_registrys_rule(
    registry: Registry, owner: str, stranger_account: LocalAccount
) -> None:
    certificate = registry.issue(owner, "production", 100, "mine")
    stranger = stranger_account.address
    response = registry.client.get(
        f"{V1}/slices/{certificate}/transfer/typed-data", params={"from": stranger, "to": stranger}
    )
    error = refused(response, 422, "registry_rule_violation")
    assert error["details"]["rule"] == "CertificateRegistryUnauthorized"
    assert error["details"]["values"] == [stranger, owner]


def test_a_replayed_request_is_refused_in_flight_and_after_it_is_mined(
    registry: Registry, owner_account: LocalAccount, buyer: str
) -> None:
    owner = owner_account.address
    first = registry.issue(owner, "production", 10, "a")
    registry.issue(owner, "production", 20, "b")
    typed = registry.typed(f"/slices/{first}/transfer", from_=owner, to=buyer, quantityWh=4)
    body = registry.signed(owner_account, typed, to=buyer, quantityWh=4)
    registry.post(f"/slices/{first}/transfer", body)

    path = f"{V1}/slices/{first}/transfer"
    error = refused(registry.client.post(path, json=body), 409, "nonce_used")
    assert error["details"]["usedBy"] == "a request in flight"
    registry.settle()
    error = refused(registry.client.post(path, json=body), 409, "nonce_used")
    assert error["details"]["usedBy"] == "on chain"
    assert len(requests_of(registry.sessions)) == 3


def test_a_request_for_a_nonce_ahead_is_refused(
    registry: Registry, owner_account: LocalAccount, buyer: str
) -> None:
    owner = owner_account.address
    certificate = registry.issue(owner, "production", 10, "a")
    typed = registry.typed(f"/slices/{certificate}/transfer", from_=owner, to=buyer, nonce=1)
    body = registry.signed(owner_account, typed, to=buyer)
    error = refused(
        registry.client.post(f"{V1}/slices/{certificate}/transfer", json=body),
        409,
        "nonce_out_of_order",
    )
    assert error["details"]["expected"] == 0


@pytest.mark.parametrize(
    ("seconds_ahead", "status"),
    [(-1, 422), (59, 422), (60, 202)],
    ids=["past", "inside_the_margin", "at_the_margin"],
)
def test_an_expired_request_is_refused(
    registry: Registry,
    owner_account: LocalAccount,
    buyer: str,
    seconds_ahead: int,
    status: int,
) -> None:
    owner = owner_account.address
    certificate = registry.issue(owner, "production", 10, "a")
    chain_time = registry.chain.w3.eth.get_block("latest")["timestamp"]
    typed = registry.typed(
        f"/slices/{certificate}/transfer",
        from_=owner,
        to=buyer,
        deadline=chain_time + seconds_ahead,
    )
    body = registry.signed(owner_account, typed, to=buyer)
    response = registry.client.post(f"{V1}/slices/{certificate}/transfer", json=body)
    assert response.status_code == status, response.text
    if status == 422:
        assert response.json()["error"]["code"] == "request_expired"


def test_a_transfer_to_a_closed_wallet_is_refused(
    registry: Registry, owner_account: LocalAccount, buyer_account: LocalAccount
) -> None:
    owner, buyer = owner_account.address, buyer_account.address
    certificate = registry.issue(owner, "production", 10, "a")
    typed = registry.typed(f"/wallets/{buyer}/close")
    response = registry.client.request(
        "DELETE", f"{V1}/wallets/{buyer}", json=registry.signed(buyer_account, typed)
    )
    assert response.status_code == 202, response.text
    registry.confirmed(response.json())
    assert registry.chain.registry.functions.walletOf(buyer).call() == [True, 0]

    response = registry.client.get(
        f"{V1}/slices/{certificate}/transfer/typed-data", params={"from": owner, "to": buyer}
    )
    error = refused(response, 422, "registry_rule_violation")
    assert error["details"]["rule"] == "CertificateRegistryWalletClosed"


def test_a_wallet_with_an_active_slice_cannot_be_closed(
    registry: Registry, owner_account: LocalAccount
) -> None:
    owner = owner_account.address
    registry.issue(owner, "production", 10, "a")
    response = registry.client.get(f"{V1}/wallets/{owner}/close/typed-data")
    error = refused(response, 422, "registry_rule_violation")
    assert error["details"] == {
        "rule": "CertificateRegistryWalletHasActiveSlices",
        "values": [owner, 1],
        "command": 0,
    }


@pytest.mark.parametrize(
    ("quantity_wh", "status"), [(1700, 202), (1701, 422)], ids=["whole_slice", "1Wh_over"]
)
def test_transferring_1_wh_more_than_the_slice_holds_is_refused(
    registry: Registry,
    owner_account: LocalAccount,
    buyer: str,
    quantity_wh: int,
    status: int,
) -> None:
    from granular.adapters.chain.forwarder import sign_request
    from granular.domain.commands import ForwardRequest
    from granular.services.commands import calldata, transfer

    owner = owner_account.address
    certificate = registry.issue(owner, "production", 1700, "a")
    request = ForwardRequest(
        owner,
        registry.chain.registry.address,
        0,
        300_000,
        0,
        registry.chain.w3.eth.get_block("latest")["timestamp"] + 3600,
        calldata(transfer(certificate, buyer, quantity_wh)),
    )
    signature = sign_request(
        chain_id=CHAIN_ID,
        forwarder=registry.chain.forwarder.address,
        request=request,
        private_key=bytes(owner_account.key),
    )
    body = {
        "from": owner,
        "nonce": 0,
        "deadline": request.deadline_s,
        "gas": 300_000,
        "signature": "0x" + signature.hex(),
        "to": buyer,
        "quantityWh": quantity_wh,
    }
    response = registry.client.post(f"{V1}/slices/{certificate}/transfer", json=body)
    assert response.status_code == status, response.text
    if status == 422:
        error = response.json()["error"]
        assert error["details"]["rule"] == "CertificateRegistryInsufficientQuantity"
        assert error["details"]["values"] == [certificate, 1700, 1701]
        assert len(requests_of(registry.sessions)) == 1
    else:
        registry.confirmed(response.json())
        assert registry.slice(certificate)[0] == buyer


def test_claiming_a_removed_slice_is_refused(
    registry: Registry, owner_account: LocalAccount, buyer: str
) -> None:
    owner = owner_account.address
    production = registry.issue(owner, "production", 100, "p")
    consumption = registry.issue(owner, "consumption", 100, "c")
    registry.confirmed(registry.transfer(owner_account, production, buyer, 40))

    response = registry.client.get(
        f"{V1}/claims/slices/typed-data",
        params={"from": owner, "source": production, "target": consumption},
    )
    error = refused(response, 422, "registry_rule_violation")
    assert error["details"]["rule"] == "CertificateRegistrySliceNotActive"
    assert error["details"]["values"] == [production, REMOVED]


def test_an_unknown_request_is_404(registry: Registry) -> None:
    refused(registry.client.get(f"{V1}/requests/99"), 404, "request_not_found")


# ------------------------------------------------------------------ wallet names


def test_a_wallet_is_named_and_renamed_by_its_owner_only(
    registry: Registry, owner_account: LocalAccount, stranger_account: LocalAccount
) -> None:
    owner = owner_account.address
    registry_address = registry.chain.registry.address

    def name_signature(account: LocalAccount, name: str, revision: int, deadline: int) -> str:
        signature = sign_wallet_name(
            chain_id=CHAIN_ID,
            registry=registry_address,
            wallet=owner,
            name=name,
            revision=revision,
            deadline_s=deadline,
            private_key=bytes(account.key),
        )
        return "0x" + signature.hex()

    typed = registry.typed(f"/wallets/{owner}/name", name="Solar Co")
    assert typed["message"]["revision"] == 0
    deadline = typed["message"]["deadline"]
    created = {
        "publicKey": owner,
        "name": "Solar Co",
        "deadline": deadline,
        "signature": signature_of(owner_account, typed),
    }
    assert registry.post("/wallets", created, status=201) == {
        "publicKey": owner,
        "name": "Solar Co",
        "revision": 1,
    }
    refused(registry.client.post(f"{V1}/wallets", json=created), 409, "wallet_already_named")

    forged = {
        "name": "Mine now",
        "revision": 1,
        "deadline": deadline,
        "signature": name_signature(stranger_account, "Mine now", 1, deadline),
    }
    refused(registry.client.patch(f"{V1}/wallets/{owner}", json=forged), 403, "wrong_signer")

    renamed = {**forged, "signature": name_signature(owner_account, "Mine now", 1, deadline)}
    response = registry.client.patch(f"{V1}/wallets/{owner}", json=renamed)
    assert response.status_code == 200, response.text
    assert response.json()["revision"] == 2
    refused(
        registry.client.patch(f"{V1}/wallets/{owner}", json=renamed),
        409,
        "wallet_name_revision_stale",
    )


@pytest.mark.parametrize(
    "signature",
    ["0x" + "00" * 65, "0x" + "ff" * 65],
    ids=["zeros", "out_of_range"],
)
def test_an_unreadable_signature_is_refused(
    registry: Registry, owner_account: LocalAccount, buyer: str, signature: str
) -> None:
    owner = owner_account.address
    certificate = registry.issue(owner, "production", 10, "a")
    typed = registry.typed(f"/slices/{certificate}/transfer", from_=owner, to=buyer)
    body = {**registry.signed(owner_account, typed, to=buyer), "signature": signature}
    response = registry.client.post(f"{V1}/slices/{certificate}/transfer", json=body)
    assert response.status_code in (403, 422), response.text
    assert response.json()["error"]["code"] in ("signature_invalid", "wrong_signer")
    assert len(requests_of(registry.sessions)) == 1


def test_a_list_whose_entry_fails_on_chain_moves_nothing_and_is_reported_reverted(
    registry: Registry, owner_account: LocalAccount, buyer: str, stranger: str
) -> None:
    """transferBatch is all or nothing: one entry failing on chain keeps every slice put."""
    owner = owner_account.address
    first = registry.issue(owner, "production", 10, "a")
    second = registry.issue(owner, "production", 20, "b")
    transfers = [{"sliceId": first, "to": buyer}, {"sliceId": second, "to": buyer}]
    accepted = registry.post("/slices/transfer", _list_signed(registry, owner_account, transfers))
    # Between the check and the relay, the owner moves the first slice itself.
    registry.chain.send(registry.chain.registry.functions.transfer(first, stranger), owner)

    registry.settle()
    found = registry.request(accepted["requestId"])
    assert found["state"] == "reverted"
    assert registry.slice(first)[0] == stranger
    assert registry.slice(second)[0] == owner
    # The reverted request used no forwarder nonce: the owner signs the next one as 0 again.
    assert registry.chain.forwarder.functions.nonces(owner).call() == 0
    typed = registry.typed(f"/slices/{second}/transfer", from_=owner, to=buyer)
    assert typed["message"]["nonce"] == 0


def test_a_second_request_for_a_nonce_accepted_meanwhile_is_refused_under_the_lock(
    registry: Registry,
    owner_account: LocalAccount,
    buyer: str,
    stranger: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two different requests signed for one nonce, the second checked before the first was
    stored (a race, replayed here by hiding the first from the check outside the lock)."""
    from granular.adapters.db import commands as store
    from granular.services import commands as service

    owner = owner_account.address
    first = registry.issue(owner, "production", 10, "a")
    second = registry.issue(owner, "production", 20, "b")
    one = registry.signed(
        owner_account, registry.typed(f"/slices/{first}/transfer", from_=owner, to=buyer), to=buyer
    )
    two = registry.signed(
        owner_account,
        registry.typed(f"/slices/{second}/transfer", from_=owner, to=stranger),
        to=stranger,
    )
    assert one["nonce"] == two["nonce"] == 0
    registry.post(f"/slices/{first}/transfer", one)

    real = store.pending_nonces
    calls = []

    def stale_then_real(**kwargs: Any) -> list[int]:
        calls.append(kwargs)
        return [] if len(calls) == 1 else real(**kwargs)

    monkeypatch.setattr(service.db, "pending_nonces", stale_then_real)
    error = refused(
        registry.client.post(f"{V1}/slices/{second}/transfer", json=two), 409, "nonce_used"
    )
    assert error["details"]["usedBy"] == "a request in flight"
    assert len(calls) == 2
    registry.settle()
    assert registry.slice(first)[0] == buyer
    assert registry.slice(second)[0] == owner


def test_a_certificate_issued_over_http_keeps_its_header_under_the_hash_on_chain(
    registry: Registry, owner: str
) -> None:
    from granular.adapters.db.headers import get_headers
    from granular.domain.headers import canonical_json, data_hash_hex

    certificate = registry.issue(owner, "consumption", 321, "with-header")

    header = {"deviceId": "site-1", "kind": "consumption", "quantityWh": 321}
    (issued,) = registry.chain.registry.events.CertificateIssued().get_logs(
        from_block=0, argument_filters={"certificateId": certificate}
    )
    on_chain = "0x" + bytes(issued["args"]["dataHash"]).hex()
    assert on_chain == data_hash_hex(canonical_json(header))
    with registry.sessions() as session:
        stored = get_headers(session=session, hashes=[on_chain])
    assert stored == {on_chain: canonical_json(header).decode()}
    assert registry.slice(certificate) == (owner, CONSUMPTION, ACTIVE, 321, certificate)
