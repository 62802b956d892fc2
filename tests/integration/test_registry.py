"""CertificateRegistry on a real anvil: every command's success path and each of its reverts.

Reverts are asserted by custom error name and arguments. The decoder returns addresses in
lower case (eth_abi), so expected addresses go through `low()`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import pytest
from eth_utils.crypto import keccak

from tests.integration.chain import Chain

PRODUCTION, CONSUMPTION = 0, 1
NONE, ACTIVE, REMOVED, CLAIMED, WITHDRAWN, EXPIRED = range(6)
ZERO_ADDRESS = "0x" + "00" * 20
MAX_ID = (1 << 44) - 1
ISSUER_ROLE = keccak(text="ISSUER_ROLE")
DEFAULT_ADMIN_ROLE = b"\x00" * 32
MAX_QUANTITY_WH = (1 << 48) - 1
NEXT_ID_SLOT = 1  # AccessControl._roles is slot 0; CertificateRegistry._nextId follows
SLICES_SLOT = 2  # CertificateRegistry._slices follows _nextId

_batch_numbers = itertools.count(1)

# chain.events decodes one event type from receipts that carry several; web3 warns on each other.


class Slice(NamedTuple):
    owner: str
    kind: int
    state: int
    quantity_wh: int
    certificate_id: int


# ------------------------------------------------------------------ helpers


def low(address: str) -> str:
    return address.lower()


def new_batch_id() -> bytes:
    return keccak(text=f"batch-{next(_batch_numbers)}")


def data_hash(owner: str, kind: int, quantity_wh: int) -> bytes:
    return keccak(text=f"header:{owner}:{kind}:{quantity_wh}")


def issue(
    chain: Chain,
    issuer: str,
    items: Sequence[tuple[str, int, int]],
    batch_id: bytes | None = None,
) -> list[int]:
    """Issue `(owner, kind, quantity_wh)` items in one batch; the certificate ids."""
    call = chain.registry.functions.issueBatch(
        batch_id or new_batch_id(),
        [(owner, kind, qty, data_hash(owner, kind, qty)) for owner, kind, qty in items],
    )
    receipt = chain.send(call, issuer)
    return [event.args.certificateId for event in chain.events(receipt, "CertificateIssued")]


def issue_one(
    chain: Chain, issuer: str, owner: str, quantity_wh: int, kind: int = PRODUCTION
) -> int:
    return issue(chain, issuer, [(owner, kind, quantity_wh)])[0]


def transact(chain: Chain, call: Any, sender: str) -> tuple[Any, Any]:
    """The call's return value (simulated on the same state), then the mined receipt."""
    result = call.call({"from": sender})
    return result, chain.send(call, sender)


def slice_of(chain: Chain, slice_id: int) -> Slice:
    return Slice(*chain.registry.functions.sliceOf(slice_id).call())


def wallet_of(chain: Chain, wallet: str) -> tuple[bool, int]:
    closed, active = chain.registry.functions.walletOf(wallet).call()
    return closed, active


def active_count(chain: Chain, wallet: str) -> int:
    return wallet_of(chain, wallet)[1]


def all_slices(chain: Chain) -> dict[int, Slice]:
    next_id = chain.registry.functions.nextId().call()
    return {slice_id: slice_of(chain, slice_id) for slice_id in range(1, next_id)}


def certificate_slices(chain: Chain, certificate_id: int) -> dict[int, Slice]:
    return {i: s for i, s in all_slices(chain).items() if s.certificate_id == certificate_id}


def live_sum(chain: Chain, certificate_id: int) -> int:
    slices = certificate_slices(chain, certificate_id).values()
    return sum(s.quantity_wh for s in slices if s.state != REMOVED)


def assert_wallet_counts_match_slices(chain: Chain, *wallets: str) -> None:
    """walletOf's active count of each wallet equals the Active slices it holds."""
    held = Counter(s.owner for s in all_slices(chain).values() if s.state == ACTIVE)
    for wallet in wallets:
        assert active_count(chain, wallet) == held[wallet], wallet


def split(
    chain: Chain, sender: str, slice_id: int, parts: Sequence[tuple[int, str]]
) -> tuple[list[int], Any]:
    return transact(chain, chain.registry.functions.split(slice_id, list(parts)), sender)


def split_event(chain: Chain, receipt: Any) -> Any:
    (event,) = chain.events(receipt, "SliceSplit")
    return event.args


def close_wallet(chain: Chain, wallet: str) -> None:
    chain.send(chain.registry.functions.closeWallet(), wallet)


def set_operator(chain: Chain, wallet: str, operator: str, approved: bool = True) -> None:
    chain.send(chain.registry.functions.setOperator(operator, approved), wallet)


# ------------------------------------------------------------------ issueBatch


def test_issue_batch_ids_start_at_one_and_events_carry_the_header(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    batch_id = new_batch_id()
    items = [
        (owner, PRODUCTION, 100, keccak(text="a")),
        (buyer, CONSUMPTION, 200, keccak(text="b")),
        (owner, PRODUCTION, 300, keccak(text="c")),
    ]
    call = chain.registry.functions.issueBatch(batch_id, items)

    first, receipt = transact(chain, call, issuer)

    assert first == 1
    issued = [event.args for event in chain.events(receipt, "CertificateIssued")]
    assert [(e.certificateId, e.owner, e.kind, e.quantityWh, e.dataHash) for e in issued] == [
        (i + 1, *item) for i, item in enumerate(items)
    ]
    (batch,) = chain.events(receipt, "BatchIssued")
    assert (batch.args.batchId, batch.args.firstCertificateId, batch.args.count) == (batch_id, 1, 3)
    for i, (who, kind, qty, _) in enumerate(items, start=1):
        assert slice_of(chain, i) == Slice(who, kind, ACTIVE, qty, i)
    assert chain.registry.functions.nextId().call() == 4
    assert wallet_of(chain, owner) == (False, 2)
    assert wallet_of(chain, buyer) == (False, 1)
    assert chain.registry.functions.isBatchIssued(batch_id).call() is True
    assert chain.registry.functions.isBatchIssued(new_batch_id()).call() is False


def test_second_batch_continues_the_id_counter(chain: Chain, issuer: str, owner: str) -> None:
    assert issue(chain, issuer, [(owner, PRODUCTION, 1), (owner, PRODUCTION, 2)]) == [1, 2]
    assert issue(chain, issuer, [(owner, CONSUMPTION, 3)]) == [3]
    assert chain.registry.functions.nextId().call() == 4


def test_issue_batch_counts_every_run_of_owners(
    chain: Chain, issuer: str, owner: str, buyer: str, stranger: str
) -> None:
    issue(
        chain,
        issuer,
        [
            (owner, PRODUCTION, 1),
            (owner, PRODUCTION, 2),
            (buyer, CONSUMPTION, 3),
            (owner, PRODUCTION, 4),
            (stranger, CONSUMPTION, 5),
            (stranger, CONSUMPTION, 6),
        ],
    )

    assert active_count(chain, owner) == 3
    assert active_count(chain, buyer) == 1
    assert active_count(chain, stranger) == 2
    assert_wallet_counts_match_slices(chain, owner, buyer, stranger)


def test_issue_batch_by_non_issuer_reverts(chain: Chain, owner: str, stranger: str) -> None:
    call = chain.registry.functions.issueBatch(
        new_batch_id(), [(owner, PRODUCTION, 100, keccak(text="x"))]
    )
    with chain.reverts("AccessControlUnauthorizedAccount", low(stranger), ISSUER_ROLE):
        call.transact({"from": stranger})


def test_issue_batch_empty_reverts(chain: Chain, issuer: str) -> None:
    batch_id = new_batch_id()
    with chain.reverts("CertificateRegistryEmptyBatch", batch_id):
        chain.registry.functions.issueBatch(batch_id, []).transact({"from": issuer})


def test_issue_batch_duplicate_batch_id_reverts(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    batch_id = new_batch_id()
    issue(chain, issuer, [(owner, PRODUCTION, 100)], batch_id=batch_id)

    with chain.reverts("CertificateRegistryBatchAlreadyIssued", batch_id):
        issue(chain, issuer, [(buyer, CONSUMPTION, 5)], batch_id=batch_id)
    assert chain.registry.functions.nextId().call() == 2


def test_issue_batch_zero_quantity_reverts_with_the_would_be_id(
    chain: Chain, issuer: str, owner: str
) -> None:
    issue_one(chain, issuer, owner, 10)  # id 1, so the batch below would start at 2

    with chain.reverts("CertificateRegistryZeroQuantity", 3):
        issue(chain, issuer, [(owner, PRODUCTION, 1), (owner, PRODUCTION, 0)])


@pytest.mark.parametrize("position", ["first", "after_another_owner"])
def test_issue_batch_to_zero_address_reverts(
    chain: Chain, issuer: str, owner: str, position: str
) -> None:
    items = [(ZERO_ADDRESS, PRODUCTION, 5)]
    if position == "after_another_owner":
        items.insert(0, (owner, PRODUCTION, 5))

    with chain.reverts("CertificateRegistryInvalidAddress", ZERO_ADDRESS):
        issue(chain, issuer, items)


@pytest.mark.parametrize("position", ["alone", "after_another_owner"])
def test_issue_batch_to_closed_wallet_reverts(
    chain: Chain, issuer: str, owner: str, buyer: str, position: str
) -> None:
    close_wallet(chain, buyer)
    items = [(buyer, CONSUMPTION, 5)]
    if position == "after_another_owner":
        items.insert(0, (owner, PRODUCTION, 5))

    with chain.reverts("CertificateRegistryWalletClosed", low(buyer)):
        issue(chain, issuer, items)


def test_ids_are_bounded_by_the_packed_layout(chain: Chain, issuer: str, owner: str) -> None:
    registry = chain.registry.address
    assert int.from_bytes(chain.w3.eth.get_storage_at(registry, NEXT_ID_SLOT), "big") == 1
    chain.w3.provider.make_request(
        "anvil_setStorageAt",  # type: ignore[arg-type]
        [registry, hex(NEXT_ID_SLOT), "0x" + MAX_ID.to_bytes(32, "big").hex()],
    )
    assert chain.registry.functions.nextId().call() == MAX_ID

    with chain.reverts("CertificateRegistryIdSpaceExhausted", MAX_ID + 1, MAX_ID):
        issue(chain, issuer, [(owner, PRODUCTION, 1), (owner, PRODUCTION, 2)])
    last = issue_one(chain, issuer, owner, 7)
    assert last == MAX_ID
    assert slice_of(chain, MAX_ID) == Slice(owner, PRODUCTION, ACTIVE, 7, MAX_ID)
    with chain.reverts("CertificateRegistryIdSpaceExhausted", MAX_ID + 2, MAX_ID):
        chain.registry.functions.split(last, [(3, ZERO_ADDRESS)]).transact({"from": owner})


# ------------------------------------------------------------------ the ETT slicing example


def test_ett_slicing_example_conserves_the_certificate(
    chain: Chain, issuer: str, owner: str, buyer: str, stranger: str
) -> None:
    # An unrelated certificate first, so filtering slices by certificate id matters.
    other, cert = issue(chain, issuer, [(buyer, CONSUMPTION, 999), (owner, PRODUCTION, 1700)])
    assert (other, cert) == (1, 2)

    def check(removed: set[int], active: dict[int, tuple[int, str]]) -> None:
        slices = certificate_slices(chain, cert)
        assert set(slices) == {cert} | removed | set(active)
        for slice_id in removed:
            assert slices[slice_id].state == REMOVED, slice_id
        for slice_id, (qty, who) in active.items():
            assert slices[slice_id] == Slice(who, PRODUCTION, ACTIVE, qty, cert), slice_id
        assert live_sum(chain, cert) == 1700
        assert slice_of(chain, other) == Slice(buyer, CONSUMPTION, ACTIVE, 999, other)
        assert_wallet_counts_match_slices(chain, owner, buyer, stranger)

    # 1700 → 1200 / 250 / 150 / 100 (exactly the whole: no remainder child)
    ids, receipt = split(
        chain, owner, cert, [(1200, ZERO_ADDRESS), (250, buyer), (150, stranger), (100, owner)]
    )
    event = split_event(chain, receipt)
    assert ids == [3, 4, 5, 6]
    assert (event.parentSliceId, event.certificateId) == (cert, cert)
    assert event.childSliceIds == ids
    assert event.quantitiesWh == [1200, 250, 150, 100]
    assert event.owners == [owner, buyer, stranger, owner]
    check(
        removed={cert},
        active={3: (1200, owner), 4: (250, buyer), 5: (150, stranger), 6: (100, owner)},
    )

    # 1200 → 700 (to the buyer) / 500 (the remainder, back to the owner)
    ids, receipt = split(chain, owner, 3, [(700, buyer)])
    event = split_event(chain, receipt)
    assert ids == [7, 8]
    assert (event.parentSliceId, event.certificateId) == (3, cert)
    assert (event.childSliceIds, event.quantitiesWh) == ([7, 8], [700, 500])
    assert event.owners == [buyer, owner]
    check(
        removed={cert, 3},
        active={
            4: (250, buyer),
            5: (150, stranger),
            6: (100, owner),
            7: (700, buyer),
            8: (500, owner),
        },
    )

    # 500 → 300 / 200, both kept by the owner
    ids, receipt = split(chain, owner, 8, [(300, ZERO_ADDRESS), (200, ZERO_ADDRESS)])
    event = split_event(chain, receipt)
    assert ids == [9, 10]
    assert (event.parentSliceId, event.certificateId) == (8, cert)
    assert (event.childSliceIds, event.quantitiesWh) == ([9, 10], [300, 200])
    assert event.owners == [owner, owner]
    check(
        removed={cert, 3, 8},
        active={
            4: (250, buyer),
            5: (150, stranger),
            6: (100, owner),
            7: (700, buyer),
            9: (300, owner),
            10: (200, owner),
        },
    )
    assert active_count(chain, owner) == 3
    assert active_count(chain, buyer) == 3  # 999 Wh consumption + 250 + 700
    assert active_count(chain, stranger) == 1


# ------------------------------------------------------------------ split


def test_split_remainder_goes_back_to_the_owner(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    cert = issue_one(chain, issuer, owner, 1000)

    ids, receipt = split(chain, owner, cert, [(300, buyer), (200, ZERO_ADDRESS)])

    assert ids == [2, 3, 4]
    event = split_event(chain, receipt)
    assert event.quantitiesWh == [300, 200, 500]
    assert event.owners == [buyer, owner, owner]
    assert slice_of(chain, cert).state == REMOVED
    assert slice_of(chain, 2) == Slice(buyer, PRODUCTION, ACTIVE, 300, cert)
    assert slice_of(chain, 3) == Slice(owner, PRODUCTION, ACTIVE, 200, cert)
    assert slice_of(chain, 4) == Slice(owner, PRODUCTION, ACTIVE, 500, cert)
    assert wallet_of(chain, owner) == (False, 2)
    assert wallet_of(chain, buyer) == (False, 1)
    assert live_sum(chain, cert) == 1000


def test_split_of_the_whole_quantity_to_other_wallets_leaves_the_owner_nothing(
    chain: Chain, issuer: str, owner: str, buyer: str, stranger: str
) -> None:
    cert = issue_one(chain, issuer, owner, 1000, kind=CONSUMPTION)

    ids, receipt = split(chain, owner, cert, [(600, buyer), (400, stranger)])

    assert ids == [2, 3]
    assert split_event(chain, receipt).owners == [buyer, stranger]
    assert slice_of(chain, 2) == Slice(buyer, CONSUMPTION, ACTIVE, 600, cert)
    assert slice_of(chain, 3) == Slice(stranger, CONSUMPTION, ACTIVE, 400, cert)
    assert active_count(chain, owner) == 0
    assert active_count(chain, buyer) == 1
    assert active_count(chain, stranger) == 1
    assert_wallet_counts_match_slices(chain, owner, buyer, stranger)


def test_split_part_addressed_to_the_owner_stays_with_the_owner(
    chain: Chain, issuer: str, owner: str
) -> None:
    cert = issue_one(chain, issuer, owner, 10)

    ids, receipt = split(chain, owner, cert, [(4, owner), (6, ZERO_ADDRESS)])

    assert ids == [2, 3]
    assert split_event(chain, receipt).owners == [owner, owner]
    assert active_count(chain, owner) == 2


def test_split_by_an_approved_operator(
    chain: Chain, issuer: str, owner: str, buyer: str, stranger: str
) -> None:
    cert = issue_one(chain, issuer, owner, 100)
    set_operator(chain, owner, stranger)

    ids, receipt = split(chain, stranger, cert, [(30, buyer)])

    assert ids == [2, 3]
    # The remainder goes to the slice's owner, not to the operator who called.
    assert split_event(chain, receipt).owners == [buyer, owner]
    assert active_count(chain, stranger) == 0


def test_split_unknown_slice_reverts(chain: Chain, issuer: str, owner: str) -> None:
    issue_one(chain, issuer, owner, 100)
    for unknown in (0, 2):
        with chain.reverts("CertificateRegistryUnknownSlice", unknown):
            chain.registry.functions.split(unknown, [(1, ZERO_ADDRESS)]).transact({"from": owner})


def test_split_removed_slice_reverts(chain: Chain, issuer: str, owner: str) -> None:
    cert = issue_one(chain, issuer, owner, 100)
    split(chain, owner, cert, [(40, ZERO_ADDRESS)])

    with chain.reverts("CertificateRegistrySliceNotActive", cert, REMOVED):
        chain.registry.functions.split(cert, [(1, ZERO_ADDRESS)]).transact({"from": owner})


def test_split_by_a_stranger_reverts(chain: Chain, issuer: str, owner: str, stranger: str) -> None:
    cert = issue_one(chain, issuer, owner, 100)

    with chain.reverts("CertificateRegistryUnauthorized", low(stranger), low(owner)):
        chain.registry.functions.split(cert, [(1, stranger)]).transact({"from": stranger})


def test_split_by_the_issuer_reverts(chain: Chain, issuer: str, owner: str) -> None:
    cert = issue_one(chain, issuer, owner, 100)

    with chain.reverts("CertificateRegistryUnauthorized", low(issuer), low(owner)):
        chain.registry.functions.split(cert, [(1, ZERO_ADDRESS)]).transact({"from": issuer})


def test_split_to_a_closed_wallet_reverts(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    cert = issue_one(chain, issuer, owner, 100)
    close_wallet(chain, buyer)

    with chain.reverts("CertificateRegistryWalletClosed", low(buyer)):
        chain.registry.functions.split(cert, [(10, ZERO_ADDRESS), (20, buyer)]).transact(
            {"from": owner}
        )


def test_split_with_no_parts_reverts(chain: Chain, issuer: str, owner: str) -> None:
    cert = issue_one(chain, issuer, owner, 100)

    with chain.reverts("CertificateRegistryEmptySplit", cert):
        chain.registry.functions.split(cert, []).transact({"from": owner})


def test_split_with_a_zero_part_reverts(chain: Chain, issuer: str, owner: str) -> None:
    cert = issue_one(chain, issuer, owner, 100)

    with chain.reverts("CertificateRegistryZeroQuantity", cert):
        chain.registry.functions.split(cert, [(10, ZERO_ADDRESS), (0, ZERO_ADDRESS)]).transact(
            {"from": owner}
        )


@pytest.mark.parametrize(
    ("parts", "requested"),
    [([(101, ZERO_ADDRESS)], 101), ([(60, ZERO_ADDRESS), (41, ZERO_ADDRESS)], 101)],
    ids=["one_part_1wh_over", "two_parts_1wh_over"],
)
def test_split_over_the_quantity_reverts(
    chain: Chain, issuer: str, owner: str, parts: list[tuple[int, str]], requested: int
) -> None:
    cert = issue_one(chain, issuer, owner, 100)

    with chain.reverts("CertificateRegistryInsufficientQuantity", cert, 100, requested):
        chain.registry.functions.split(cert, parts).transact({"from": owner})


def test_split_into_one_part_of_the_whole_quantity_replaces_the_slice(
    chain: Chain, issuer: str, owner: str
) -> None:
    cert = issue_one(chain, issuer, owner, 100)

    ids, _ = split(chain, owner, cert, [(100, ZERO_ADDRESS)])

    assert ids == [2]
    assert slice_of(chain, cert).state == REMOVED
    assert slice_of(chain, 2) == Slice(owner, PRODUCTION, ACTIVE, 100, cert)
    assert active_count(chain, owner) == 1


# ------------------------------------------------------------------ transfer / transferPart


def test_transfer_moves_the_whole_slice(chain: Chain, issuer: str, owner: str, buyer: str) -> None:
    cert = issue_one(chain, issuer, owner, 100)

    receipt = chain.send(chain.registry.functions.transfer(cert, buyer), owner)

    (event,) = chain.events(receipt, "SliceTransferred")
    assert (event.args.sliceId, event.args.to) == (cert, buyer)
    assert event.args["from"] == owner
    assert slice_of(chain, cert) == Slice(buyer, PRODUCTION, ACTIVE, 100, cert)
    assert chain.registry.functions.nextId().call() == 2
    assert active_count(chain, owner) == 0
    assert active_count(chain, buyer) == 1


def test_transfer_to_oneself_keeps_the_count(chain: Chain, issuer: str, owner: str) -> None:
    cert = issue_one(chain, issuer, owner, 100)

    chain.send(chain.registry.functions.transfer(cert, owner), owner)

    assert slice_of(chain, cert).owner == owner
    assert active_count(chain, owner) == 1


def test_transfer_by_an_approved_operator(
    chain: Chain, issuer: str, owner: str, buyer: str, stranger: str
) -> None:
    cert = issue_one(chain, issuer, owner, 100)
    set_operator(chain, owner, stranger)

    chain.send(chain.registry.functions.transfer(cert, buyer), stranger)

    assert slice_of(chain, cert).owner == buyer


def test_transfer_unknown_slice_reverts(chain: Chain, owner: str, buyer: str) -> None:
    with chain.reverts("CertificateRegistryUnknownSlice", 1):
        chain.registry.functions.transfer(1, buyer).transact({"from": owner})


def test_transfer_of_a_claimed_slice_reverts(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, 5), (owner, CONSUMPTION, 5)]
    )
    chain.send(chain.registry.functions.claim(production, consumption), owner)

    with chain.reverts("CertificateRegistrySliceNotActive", production, CLAIMED):
        chain.registry.functions.transfer(production, buyer).transact({"from": owner})


def test_transfer_by_a_stranger_reverts(
    chain: Chain, issuer: str, owner: str, stranger: str
) -> None:
    cert = issue_one(chain, issuer, owner, 100)

    with chain.reverts("CertificateRegistryUnauthorized", low(stranger), low(owner)):
        chain.registry.functions.transfer(cert, stranger).transact({"from": stranger})


def test_transfer_to_a_closed_wallet_reverts(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    cert = issue_one(chain, issuer, owner, 100)
    close_wallet(chain, buyer)

    with chain.reverts("CertificateRegistryWalletClosed", low(buyer)):
        chain.registry.functions.transfer(cert, buyer).transact({"from": owner})


def test_transfer_to_the_zero_address_reverts(chain: Chain, issuer: str, owner: str) -> None:
    cert = issue_one(chain, issuer, owner, 100)

    with chain.reverts("CertificateRegistryInvalidAddress", ZERO_ADDRESS):
        chain.registry.functions.transfer(cert, ZERO_ADDRESS).transact({"from": owner})


def test_transfer_part_splits_first_child_to_the_receiver(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    cert = issue_one(chain, issuer, owner, 1000)

    new_id, receipt = transact(
        chain, chain.registry.functions.transferPart(cert, 400, buyer), owner
    )

    assert new_id == 2
    event = split_event(chain, receipt)
    assert (event.parentSliceId, event.childSliceIds) == (cert, [2, 3])
    assert (event.quantitiesWh, event.owners) == ([400, 600], [buyer, owner])
    assert slice_of(chain, cert).state == REMOVED
    assert slice_of(chain, 2) == Slice(buyer, PRODUCTION, ACTIVE, 400, cert)
    assert slice_of(chain, 3) == Slice(owner, PRODUCTION, ACTIVE, 600, cert)
    assert active_count(chain, owner) == 1
    assert active_count(chain, buyer) == 1
    assert live_sum(chain, cert) == 1000


def test_transfer_part_of_the_whole_slice_is_a_plain_transfer(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    cert = issue_one(chain, issuer, owner, 1000)

    same_id, receipt = transact(
        chain, chain.registry.functions.transferPart(cert, 1000, buyer), owner
    )

    assert same_id == cert
    assert chain.events(receipt, "SliceSplit") == []
    (event,) = chain.events(receipt, "SliceTransferred")
    assert (event.args.sliceId, event.args["from"], event.args.to) == (cert, owner, buyer)
    assert slice_of(chain, cert) == Slice(buyer, PRODUCTION, ACTIVE, 1000, cert)
    assert chain.registry.functions.nextId().call() == 2


def test_transfer_part_over_the_slice_reverts(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    cert = issue_one(chain, issuer, owner, 1000)

    with chain.reverts("CertificateRegistryInsufficientQuantity", cert, 1000, 1001):
        chain.registry.functions.transferPart(cert, 1001, buyer).transact({"from": owner})


def test_transfer_part_of_zero_reverts(chain: Chain, issuer: str, owner: str, buyer: str) -> None:
    cert = issue_one(chain, issuer, owner, 1000)

    with chain.reverts("CertificateRegistryZeroQuantity", cert):
        chain.registry.functions.transferPart(cert, 0, buyer).transact({"from": owner})


@pytest.mark.parametrize("quantity_wh", [400, 1000], ids=["partial", "whole"])
def test_transfer_part_to_a_closed_wallet_reverts(
    chain: Chain, issuer: str, owner: str, buyer: str, quantity_wh: int
) -> None:
    cert = issue_one(chain, issuer, owner, 1000)
    close_wallet(chain, buyer)

    with chain.reverts("CertificateRegistryWalletClosed", low(buyer)):
        chain.registry.functions.transferPart(cert, quantity_wh, buyer).transact({"from": owner})


@pytest.mark.parametrize("quantity_wh", [400, 1000], ids=["partial", "whole"])
def test_transfer_part_to_the_zero_address_reverts(
    chain: Chain, issuer: str, owner: str, quantity_wh: int
) -> None:
    cert = issue_one(chain, issuer, owner, 1000)

    with chain.reverts("CertificateRegistryInvalidAddress", ZERO_ADDRESS):
        chain.registry.functions.transferPart(cert, quantity_wh, ZERO_ADDRESS).transact(
            {"from": owner}
        )


def test_transfer_part_by_a_stranger_reverts(
    chain: Chain, issuer: str, owner: str, stranger: str
) -> None:
    cert = issue_one(chain, issuer, owner, 1000)

    with chain.reverts("CertificateRegistryUnauthorized", low(stranger), low(owner)):
        chain.registry.functions.transferPart(cert, 1, stranger).transact({"from": stranger})


def test_transfer_part_of_a_removed_slice_reverts(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    cert = issue_one(chain, issuer, owner, 1000)
    chain.send(chain.registry.functions.transferPart(cert, 1, buyer), owner)

    with chain.reverts("CertificateRegistrySliceNotActive", cert, REMOVED):
        chain.registry.functions.transferPart(cert, 1, buyer).transact({"from": owner})


# ------------------------------------------------------------------ claim / claimPart


def claim_call(chain: Chain, method: str, production: int, consumption: int, qty: int) -> Any:
    """`claim(p, c)`, or `claimPart(p, c, qty)` for the same pair."""
    if method == "claim":
        return chain.registry.functions.claim(production, consumption)
    return chain.registry.functions.claimPart(production, consumption, qty)


CLAIM_METHODS = pytest.mark.parametrize("method", ["claim", "claimPart"])


@CLAIM_METHODS
def test_claim_of_equal_slices_claims_both(
    chain: Chain, issuer: str, owner: str, method: str
) -> None:
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, 500), (owner, CONSUMPTION, 500)]
    )

    claim_id, receipt = transact(
        chain, claim_call(chain, method, production, consumption, 500), owner
    )

    assert claim_id == production
    (event,) = chain.events(receipt, "SliceClaimed")
    assert (
        event.args.claimId,
        event.args.productionSliceId,
        event.args.consumptionSliceId,
        event.args.quantityWh,
    ) == (production, production, consumption, 500)
    assert chain.events(receipt, "SliceSplit") == []
    assert slice_of(chain, production) == Slice(owner, PRODUCTION, CLAIMED, 500, production)
    assert slice_of(chain, consumption) == Slice(owner, CONSUMPTION, CLAIMED, 500, consumption)
    assert active_count(chain, owner) == 0


def test_claim_across_wallets_by_an_operator_of_the_consumer(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, 500), (buyer, CONSUMPTION, 500)]
    )
    set_operator(chain, buyer, owner)

    claim_id, _ = transact(chain, chain.registry.functions.claim(production, consumption), owner)

    assert claim_id == production
    assert slice_of(chain, production).state == CLAIMED
    assert slice_of(chain, consumption).state == CLAIMED
    assert active_count(chain, owner) == 0
    assert active_count(chain, buyer) == 0


def test_claim_by_an_operator_of_both_wallets(
    chain: Chain, issuer: str, owner: str, buyer: str, stranger: str
) -> None:
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, 500), (buyer, CONSUMPTION, 500)]
    )
    set_operator(chain, owner, stranger)
    set_operator(chain, buyer, stranger)

    chain.send(chain.registry.functions.claim(production, consumption), stranger)

    assert slice_of(chain, production).state == CLAIMED
    assert slice_of(chain, consumption).state == CLAIMED


@pytest.mark.parametrize(
    ("production_wh", "consumption_wh", "quantity_wh", "production_split", "consumption_split"),
    [
        (1000, 400, 400, True, False),
        (300, 800, 300, False, True),
        (1000, 800, 500, True, True),
    ],
    ids=["production_holds_more", "consumption_holds_more", "both_hold_more"],
)
def test_claim_part_splits_only_the_side_that_holds_more(
    chain: Chain,
    issuer: str,
    owner: str,
    production_wh: int,
    consumption_wh: int,
    quantity_wh: int,
    production_split: bool,
    consumption_split: bool,
) -> None:
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, production_wh), (owner, CONSUMPTION, consumption_wh)]
    )

    claim_id, receipt = transact(
        chain,
        chain.registry.functions.claimPart(production, consumption, quantity_wh),
        owner,
    )

    splits = {e.args.parentSliceId: e.args for e in chain.events(receipt, "SliceSplit")}
    assert set(splits) == {
        sid
        for sid, did_split in ((production, production_split), (consumption, consumption_split))
        if did_split
    }
    claimed = {}
    for parent, kind, total in (
        (production, PRODUCTION, production_wh),
        (consumption, CONSUMPTION, consumption_wh),
    ):
        if parent in splits:
            event = splits[parent]
            claimed_id, rest_id = event.childSliceIds
            assert event.quantitiesWh == [quantity_wh, total - quantity_wh]
            assert event.owners == [owner, owner]
            assert slice_of(chain, parent).state == REMOVED
            assert slice_of(chain, rest_id) == Slice(
                owner, kind, ACTIVE, total - quantity_wh, parent
            )
        else:
            claimed_id = parent
        assert slice_of(chain, claimed_id) == Slice(owner, kind, CLAIMED, quantity_wh, parent)
        assert live_sum(chain, parent) == total
        claimed[kind] = claimed_id
    assert claim_id == claimed[PRODUCTION]
    (event,) = chain.events(receipt, "SliceClaimed")
    assert (
        event.args.claimId,
        event.args.productionSliceId,
        event.args.consumptionSliceId,
        event.args.quantityWh,
    ) == (claimed[PRODUCTION], claimed[PRODUCTION], claimed[CONSUMPTION], quantity_wh)
    assert active_count(chain, owner) == int(production_split) + int(consumption_split)
    assert_wallet_counts_match_slices(chain, owner)


def test_partial_claim_across_wallets_keeps_the_rest_with_each_owner(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, 1000), (buyer, CONSUMPTION, 800)]
    )
    set_operator(chain, buyer, owner)

    chain.send(chain.registry.functions.claimPart(production, consumption, 500), owner)

    rest = [s for s in all_slices(chain).values() if s.state == ACTIVE]
    assert sorted((s.owner, s.kind, s.quantity_wh) for s in rest) == sorted(
        [(owner, PRODUCTION, 500), (buyer, CONSUMPTION, 300)]
    )
    assert active_count(chain, owner) == 1
    assert active_count(chain, buyer) == 1


@pytest.mark.parametrize(
    ("kinds", "order"),
    [
        ((PRODUCTION, PRODUCTION), "as_given"),
        ((CONSUMPTION, CONSUMPTION), "as_given"),
        ((PRODUCTION, CONSUMPTION), "swapped"),
    ],
    ids=["two_production", "two_consumption", "swapped_order"],
)
@CLAIM_METHODS
def test_claim_kind_mismatch_reverts(
    chain: Chain, issuer: str, owner: str, method: str, kinds: tuple[int, int], order: str
) -> None:
    first, second = issue(chain, issuer, [(owner, kinds[0], 100), (owner, kinds[1], 100)])
    if order == "swapped":
        first, second = second, first

    with chain.reverts("CertificateRegistryKindMismatch", first, second):
        claim_call(chain, method, first, second, 100).transact({"from": owner})


@pytest.mark.parametrize(
    ("production_wh", "consumption_wh"), [(500, 499), (499, 500)], ids=["1wh_less", "1wh_more"]
)
def test_claim_quantity_mismatch_reverts(
    chain: Chain, issuer: str, owner: str, production_wh: int, consumption_wh: int
) -> None:
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, production_wh), (owner, CONSUMPTION, consumption_wh)]
    )

    with chain.reverts(
        "CertificateRegistryQuantityMismatch",
        production,
        production_wh,
        consumption,
        consumption_wh,
    ):
        chain.registry.functions.claim(production, consumption).transact({"from": owner})


@pytest.mark.parametrize(
    "side", ["producer_wallet", "consumer_wallet"], ids=["on_producer", "on_consumer"]
)
@CLAIM_METHODS
def test_claim_without_permission_on_either_wallet_reverts(
    chain: Chain, issuer: str, owner: str, buyer: str, method: str, side: str
) -> None:
    # The owner holds one side, the buyer the other; the owner is no operator of the buyer.
    holders = (buyer, owner) if side == "producer_wallet" else (owner, buyer)
    production, consumption = issue(
        chain, issuer, [(holders[0], PRODUCTION, 100), (holders[1], CONSUMPTION, 100)]
    )

    with chain.reverts("CertificateRegistryUnauthorized", low(owner), low(buyer)):
        claim_call(chain, method, production, consumption, 100).transact({"from": owner})


@CLAIM_METHODS
def test_claim_by_a_stranger_reverts(
    chain: Chain, issuer: str, owner: str, stranger: str, method: str
) -> None:
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, 100), (owner, CONSUMPTION, 100)]
    )

    with chain.reverts("CertificateRegistryUnauthorized", low(stranger), low(owner)):
        claim_call(chain, method, production, consumption, 100).transact({"from": stranger})


@pytest.mark.parametrize("claimed_side", ["production", "consumption"])
@CLAIM_METHODS
def test_claim_of_an_already_claimed_slice_reverts(
    chain: Chain, issuer: str, owner: str, method: str, claimed_side: str
) -> None:
    production, consumption, other_production, other_consumption = issue(
        chain,
        issuer,
        [
            (owner, PRODUCTION, 100),
            (owner, CONSUMPTION, 100),
            (owner, PRODUCTION, 100),
            (owner, CONSUMPTION, 100),
        ],
    )
    chain.send(chain.registry.functions.claim(production, consumption), owner)
    if claimed_side == "production":
        pair, stale = (production, other_consumption), production
    else:
        pair, stale = (other_production, consumption), consumption

    with chain.reverts("CertificateRegistrySliceNotActive", stale, CLAIMED):
        claim_call(chain, method, *pair, 100).transact({"from": owner})


@CLAIM_METHODS
def test_claim_of_an_unknown_slice_reverts(
    chain: Chain, issuer: str, owner: str, method: str
) -> None:
    production = issue_one(chain, issuer, owner, 100)

    with chain.reverts("CertificateRegistryUnknownSlice", 42):
        claim_call(chain, method, production, 42, 100).transact({"from": owner})


@pytest.mark.parametrize(
    ("production_wh", "consumption_wh", "short_side"),
    [(1000, 400, "consumption"), (300, 800, "production")],
    ids=["over_consumption", "over_production"],
)
def test_claim_part_over_the_smaller_side_reverts(
    chain: Chain,
    issuer: str,
    owner: str,
    production_wh: int,
    consumption_wh: int,
    short_side: str,
) -> None:
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, production_wh), (owner, CONSUMPTION, consumption_wh)]
    )
    smaller = min(production_wh, consumption_wh)
    short_id = consumption if short_side == "consumption" else production

    with chain.reverts("CertificateRegistryInsufficientQuantity", short_id, smaller, smaller + 1):
        chain.registry.functions.claimPart(production, consumption, smaller + 1).transact(
            {"from": owner}
        )
    # Exactly at the bound is fine.
    chain.send(chain.registry.functions.claimPart(production, consumption, smaller), owner)


def test_claim_part_of_zero_reverts(chain: Chain, issuer: str, owner: str) -> None:
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, 100), (owner, CONSUMPTION, 100)]
    )

    with chain.reverts("CertificateRegistryZeroQuantity", production):
        chain.registry.functions.claimPart(production, consumption, 0).transact({"from": owner})


# ------------------------------------------------------------------ withdraw


def test_withdraw_by_the_issuer(chain: Chain, issuer: str, owner: str) -> None:
    first, second = issue(chain, issuer, [(owner, PRODUCTION, 100), (owner, CONSUMPTION, 50)])

    receipt = chain.send(chain.registry.functions.withdraw(first), issuer)

    (event,) = chain.events(receipt, "SliceWithdrawn")
    assert (event.args.sliceId, event.args.owner) == (first, owner)
    assert slice_of(chain, first) == Slice(owner, PRODUCTION, WITHDRAWN, 100, first)
    assert slice_of(chain, second).state == ACTIVE
    assert active_count(chain, owner) == 1


@pytest.mark.parametrize("caller", ["owner", "stranger"])
def test_withdraw_by_a_non_issuer_reverts(
    chain: Chain, issuer: str, owner: str, stranger: str, caller: str
) -> None:
    cert = issue_one(chain, issuer, owner, 100)
    sender = owner if caller == "owner" else stranger

    with chain.reverts("AccessControlUnauthorizedAccount", low(sender), ISSUER_ROLE):
        chain.registry.functions.withdraw(cert).transact({"from": sender})


@pytest.mark.parametrize(
    "state", [REMOVED, CLAIMED, WITHDRAWN], ids=["removed", "claimed", "withdrawn"]
)
def test_withdraw_of_a_slice_not_active_reverts(
    chain: Chain, issuer: str, owner: str, state: int
) -> None:
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, 100), (owner, CONSUMPTION, 100)]
    )
    if state == REMOVED:
        split(chain, owner, production, [(10, ZERO_ADDRESS)])
    elif state == CLAIMED:
        chain.send(chain.registry.functions.claim(production, consumption), owner)
    else:
        chain.send(chain.registry.functions.withdraw(production), issuer)

    with chain.reverts("CertificateRegistrySliceNotActive", production, state):
        chain.registry.functions.withdraw(production).transact({"from": issuer})


def test_withdraw_of_an_unknown_slice_reverts(chain: Chain, issuer: str) -> None:
    with chain.reverts("CertificateRegistryUnknownSlice", 7):
        chain.registry.functions.withdraw(7).transact({"from": issuer})


# ------------------------------------------------------------------ closeWallet


def test_close_an_empty_wallet(chain: Chain, stranger: str) -> None:
    assert wallet_of(chain, stranger) == (False, 0)

    receipt = chain.send(chain.registry.functions.closeWallet(), stranger)

    (event,) = chain.events(receipt, "WalletClosed")
    assert event.args.wallet == stranger
    assert wallet_of(chain, stranger) == (True, 0)


def _empty_by_claim(chain: Chain, ids: list[int], owner: str, issuer: str, buyer: str) -> None:
    chain.send(chain.registry.functions.claim(ids[0], ids[1]), owner)


def _empty_by_transfer(chain: Chain, ids: list[int], owner: str, issuer: str, buyer: str) -> None:
    chain.send(chain.registry.functions.transfer(ids[0], buyer), owner)
    chain.send(chain.registry.functions.transferPart(ids[1], 100, buyer), owner)


def _empty_by_withdraw(chain: Chain, ids: list[int], owner: str, issuer: str, buyer: str) -> None:
    for slice_id in ids:
        chain.send(chain.registry.functions.withdraw(slice_id), issuer)


@pytest.mark.parametrize(
    "empty",
    [_empty_by_claim, _empty_by_transfer, _empty_by_withdraw],
    ids=["claimed", "transferred", "withdrawn"],
)
def test_close_wallet_refuses_active_slices_then_succeeds(
    chain: Chain,
    issuer: str,
    owner: str,
    buyer: str,
    empty: Callable[[Chain, list[int], str, str, str], None],
) -> None:
    ids = issue(chain, issuer, [(owner, PRODUCTION, 100), (owner, CONSUMPTION, 100)])

    with chain.reverts("CertificateRegistryWalletHasActiveSlices", low(owner), 2):
        chain.registry.functions.closeWallet().transact({"from": owner})
    empty(chain, ids, owner, issuer, buyer)
    assert active_count(chain, owner) == 0

    close_wallet(chain, owner)
    assert wallet_of(chain, owner) == (True, 0)


def test_close_wallet_refuses_while_one_slice_is_left(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    first, second = issue(chain, issuer, [(owner, PRODUCTION, 100), (owner, PRODUCTION, 100)])
    chain.send(chain.registry.functions.transfer(first, buyer), owner)

    with chain.reverts("CertificateRegistryWalletHasActiveSlices", low(owner), 1):
        chain.registry.functions.closeWallet().transact({"from": owner})
    assert slice_of(chain, second).owner == owner


def test_close_wallet_twice_reverts(chain: Chain, stranger: str) -> None:
    close_wallet(chain, stranger)

    with chain.reverts("CertificateRegistryWalletClosed", low(stranger)):
        chain.registry.functions.closeWallet().transact({"from": stranger})


@pytest.mark.parametrize("command", ["issue", "transfer", "transfer_part", "split_part"])
def test_nothing_can_be_sent_to_a_closed_wallet(
    chain: Chain, issuer: str, owner: str, stranger: str, command: str
) -> None:
    cert = issue_one(chain, issuer, owner, 100)
    close_wallet(chain, stranger)
    calls = {
        "issue": (
            chain.registry.functions.issueBatch(
                new_batch_id(), [(stranger, CONSUMPTION, 1, keccak(text="h"))]
            ),
            issuer,
        ),
        "transfer": (chain.registry.functions.transfer(cert, stranger), owner),
        "transfer_part": (chain.registry.functions.transferPart(cert, 1, stranger), owner),
        "split_part": (chain.registry.functions.split(cert, [(1, stranger)]), owner),
    }
    call, sender = calls[command]

    with chain.reverts("CertificateRegistryWalletClosed", low(stranger)):
        call.transact({"from": sender})
    assert wallet_of(chain, stranger) == (True, 0)


# ------------------------------------------------------------------ setOperator / isOperator


def test_set_operator_approves_and_revokes(chain: Chain, owner: str, buyer: str) -> None:
    assert chain.registry.functions.isOperator(owner, buyer).call() is False

    receipt = chain.send(chain.registry.functions.setOperator(buyer, True), owner)

    (event,) = chain.events(receipt, "OperatorSet")
    assert (event.args.wallet, event.args.operator, event.args.approved) == (owner, buyer, True)
    assert chain.registry.functions.isOperator(owner, buyer).call() is True
    assert chain.registry.functions.isOperator(buyer, owner).call() is False

    receipt = chain.send(chain.registry.functions.setOperator(buyer, False), owner)

    (event,) = chain.events(receipt, "OperatorSet")
    assert (event.args.wallet, event.args.operator, event.args.approved) == (owner, buyer, False)
    assert chain.registry.functions.isOperator(owner, buyer).call() is False


def test_revoked_operator_loses_permission(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    cert = issue_one(chain, issuer, owner, 100)
    set_operator(chain, owner, buyer)
    set_operator(chain, owner, buyer, approved=False)

    with chain.reverts("CertificateRegistryUnauthorized", low(buyer), low(owner)):
        chain.registry.functions.transfer(cert, buyer).transact({"from": buyer})


def test_operator_of_one_wallet_has_no_permission_on_another(
    chain: Chain, issuer: str, owner: str, buyer: str, stranger: str
) -> None:
    cert = issue_one(chain, issuer, buyer, 100)
    set_operator(chain, owner, stranger)

    with chain.reverts("CertificateRegistryUnauthorized", low(stranger), low(buyer)):
        chain.registry.functions.transfer(cert, stranger).transact({"from": stranger})


@pytest.mark.parametrize("approved", [True, False], ids=["approve", "revoke"])
@pytest.mark.parametrize("operator", ["self", "zero"])
def test_set_operator_to_self_or_zero_reverts(
    chain: Chain, owner: str, operator: str, approved: bool
) -> None:
    target = owner if operator == "self" else ZERO_ADDRESS

    with chain.reverts("CertificateRegistryInvalidOperator", low(owner), low(target)):
        chain.registry.functions.setOperator(target, approved).transact({"from": owner})


# ------------------------------------------------------------------ views and roles


def test_slice_of_an_unknown_id_answers_state_none(chain: Chain, issuer: str, owner: str) -> None:
    issue_one(chain, issuer, owner, 100)

    assert slice_of(chain, 2) == Slice(ZERO_ADDRESS, PRODUCTION, NONE, 0, 0)
    assert slice_of(chain, 0) == Slice(ZERO_ADDRESS, PRODUCTION, NONE, 0, 0)


def test_admin_grants_and_revokes_the_issuer_role(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    registry = chain.registry.functions
    assert registry.ISSUER_ROLE().call() == ISSUER_ROLE
    assert registry.MAX_ID().call() == MAX_ID
    chain.send(registry.grantRole(ISSUER_ROLE, buyer), issuer)

    assert issue(chain, buyer, [(owner, PRODUCTION, 5)]) == [1]

    chain.send(registry.revokeRole(ISSUER_ROLE, buyer), issuer)
    with chain.reverts("AccessControlUnauthorizedAccount", low(buyer), ISSUER_ROLE):
        issue(chain, buyer, [(owner, PRODUCTION, 5)])


def test_only_the_admin_grants_roles(chain: Chain, stranger: str) -> None:
    with chain.reverts("AccessControlUnauthorizedAccount", low(stranger), DEFAULT_ADMIN_ROLE):
        chain.registry.functions.grantRole(ISSUER_ROLE, stranger).transact({"from": stranger})


def test_renounce_role_needs_the_callers_own_address(chain: Chain, issuer: str, owner: str) -> None:
    with chain.reverts("AccessControlBadConfirmation"):
        chain.registry.functions.renounceRole(ISSUER_ROLE, owner).transact({"from": issuer})


# ------------------------------------------------------------------ harness


def test_reverts_accepts_checksummed_fixture_addresses(
    chain: Chain, issuer: str, owner: str, stranger: str
) -> None:
    cert = issue_one(chain, issuer, owner, 100)

    with chain.reverts("CertificateRegistryUnauthorized", stranger, owner):
        chain.registry.functions.transfer(cert, stranger).transact({"from": stranger})


# ------------------------------------------------------------------ the packed layout, its bounds


def move_next_id(chain: Chain, next_id: int) -> None:
    """Move the id counter (storage slot 1) with anvil_setStorageAt: no test-only code path."""
    chain.w3.provider.make_request(
        "anvil_setStorageAt",  # type: ignore[arg-type]
        [chain.registry.address, hex(NEXT_ID_SLOT), "0x" + next_id.to_bytes(32, "big").hex()],
    )
    assert chain.registry.functions.nextId().call() == next_id


def stored_word(chain: Chain, slice_id: int) -> int:
    """The raw storage word of `_slices[slice_id]`."""
    slot = keccak(slice_id.to_bytes(32, "big") + SLICES_SLOT.to_bytes(32, "big"))
    return int.from_bytes(chain.w3.eth.get_storage_at(chain.registry.address, slot), "big")


def packed(owner: str, quantity_wh: int, certificate_id: int, state: int, kind: int) -> int:
    """owner 160 | quantityWh 48 | certificateId 44 | state 3 | kind 1, from the low bits."""
    return int(owner, 16) | quantity_wh << 160 | certificate_id << 208 | state << 252 | kind << 255


def test_the_bounds_are_44_bit_ids_and_48_bit_quantities(chain: Chain) -> None:
    assert chain.registry.functions.MAX_ID().call() == MAX_ID == (1 << 44) - 1
    assert chain.registry.functions.MAX_QUANTITY_WH().call() == MAX_QUANTITY_WH


def test_a_slice_is_one_word_with_every_field_at_its_place(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    # Every field at its largest: a neighbour's bits would show if any field overlapped another.
    move_next_id(chain, MAX_ID - 2)
    cert = issue_one(chain, issuer, owner, MAX_QUANTITY_WH, kind=CONSUMPTION)
    assert cert == MAX_ID - 2
    assert stored_word(chain, cert) == packed(owner, MAX_QUANTITY_WH, cert, ACTIVE, CONSUMPTION)

    (child, rest), _ = split(chain, owner, cert, [(1, buyer)])

    assert (child, rest) == (MAX_ID - 1, MAX_ID)
    assert stored_word(chain, cert) == packed(owner, MAX_QUANTITY_WH, cert, REMOVED, CONSUMPTION)
    assert stored_word(chain, child) == packed(buyer, 1, cert, ACTIVE, CONSUMPTION)
    assert stored_word(chain, rest) == packed(owner, MAX_QUANTITY_WH - 1, cert, ACTIVE, CONSUMPTION)
    assert slice_of(chain, rest) == Slice(owner, CONSUMPTION, ACTIVE, MAX_QUANTITY_WH - 1, cert)


def test_ids_past_2_to_the_28_work_in_every_command(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    """The old bound was 2**28 - 1: ids on both sides of it and of 2**32 and 2**40 behave."""
    for start in (1 << 28, 1 << 32, 1 << 40):
        move_next_id(chain, start - 1)
        production, consumption, spare = issue(
            chain,
            issuer,
            [(owner, PRODUCTION, 900), (owner, CONSUMPTION, 500), (owner, PRODUCTION, 40)],
        )
        assert (production, consumption, spare) == (start - 1, start, start + 1)

        (claim_id,), receipt = transact(
            chain, chain.registry.functions.claimBatch([(production, consumption, 500)]), owner
        )
        (split_event,) = chain.events(receipt, "SliceSplit")
        assert split_event.args.parentSliceId == production
        assert list(split_event.args.childSliceIds) == [start + 2, start + 3]
        assert claim_id == start + 2
        assert slice_of(chain, claim_id) == Slice(owner, PRODUCTION, CLAIMED, 500, production)
        assert slice_of(chain, start + 3) == Slice(owner, PRODUCTION, ACTIVE, 400, production)

        (moved,), _ = transact(
            chain, chain.registry.functions.transferBatch([(spare, 0, buyer)]), owner
        )
        assert moved == spare
        assert slice_of(chain, spare) == Slice(buyer, PRODUCTION, ACTIVE, 40, spare)


@pytest.mark.parametrize(
    "quantity_wh",
    [MAX_QUANTITY_WH + 1, (1 << 64) - 1],
    ids=["2**48", "uint64_max"],
)
def test_issue_batch_over_48_bits_reverts_with_the_numbers(
    chain: Chain, issuer: str, owner: str, quantity_wh: int
) -> None:
    first = chain.registry.functions.nextId().call()

    with chain.reverts(
        "CertificateRegistryQuantityTooLarge", first + 1, quantity_wh, MAX_QUANTITY_WH
    ):
        issue(
            chain, issuer, [(owner, PRODUCTION, MAX_QUANTITY_WH), (owner, PRODUCTION, quantity_wh)]
        )
    assert chain.registry.functions.nextId().call() == first


def test_issue_batch_of_exactly_the_largest_quantity_holds_it(
    chain: Chain, issuer: str, owner: str
) -> None:
    cert = issue_one(chain, issuer, owner, MAX_QUANTITY_WH)

    assert slice_of(chain, cert) == Slice(owner, PRODUCTION, ACTIVE, MAX_QUANTITY_WH, cert)


# ------------------------------------------------------------------ bulk commands: shared helpers


def all_events(chain: Chain, receipt: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every registry event of the receipt, in log order, as (name, args)."""
    found = []
    for name in ("SliceSplit", "SliceTransferred", "SliceClaimed", "CertificateIssued"):
        for event in chain.events(receipt, name):
            args = {k: list(v) if isinstance(v, list | tuple) else v for k, v in event.args.items()}
            found.append((event.logIndex, name, args))
    assert len(found) == len(receipt["logs"]), "a log of an unexpected event"
    return [(name, args) for _, name, args in sorted(found, key=lambda e: e[0])]


def snapshot(chain: Chain) -> str:
    result: str = chain.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    return result


def revert_to(chain: Chain, snapshot_id: str) -> None:
    assert chain.w3.provider.make_request("evm_revert", [snapshot_id])["result"] is True  # type: ignore[arg-type]


def registry_state(chain: Chain, *wallets: str) -> tuple[dict[int, Slice], list[tuple[bool, int]]]:
    return all_slices(chain), [wallet_of(chain, w) for w in wallets]


# ------------------------------------------------------------------ claimBatch


def test_claim_batch_claims_each_pair_and_emits_the_single_claims_events(
    chain: Chain, issuer: str, owner: str
) -> None:
    p1, c1, p2, c2 = issue(
        chain,
        issuer,
        [
            (owner, PRODUCTION, 500),
            (owner, CONSUMPTION, 500),
            (owner, PRODUCTION, 70),
            (owner, CONSUMPTION, 70),
        ],
    )

    claim_ids, receipt = transact(
        chain, chain.registry.functions.claimBatch([(p1, c1, 0), (p2, c2, 0)]), owner
    )

    assert claim_ids == [p1, p2]
    assert all_events(chain, receipt) == [
        (
            "SliceClaimed",
            {"claimId": p1, "productionSliceId": p1, "consumptionSliceId": c1, "quantityWh": 500},
        ),
        (
            "SliceClaimed",
            {"claimId": p2, "productionSliceId": p2, "consumptionSliceId": c2, "quantityWh": 70},
        ),
    ]
    for slice_id in (p1, c1, p2, c2):
        assert slice_of(chain, slice_id).state == CLAIMED
    assert active_count(chain, owner) == 0


@pytest.mark.parametrize(
    ("quantity_wh", "split_production", "split_consumption"),
    [(400, False, False), (399, True, True), (300, False, True)],
    ids=["both_exactly_size", "size_minus_1_splits_both", "consumption_larger_splits"],
)
def test_claim_batch_with_a_quantity_splits_only_what_holds_more(
    chain: Chain,
    issuer: str,
    owner: str,
    quantity_wh: int,
    split_production: bool,
    split_consumption: bool,
) -> None:
    production_wh = 400 if quantity_wh != 300 else 300
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, production_wh), (owner, CONSUMPTION, 400)]
    )

    (claim_id,), receipt = transact(
        chain, chain.registry.functions.claimBatch([(production, consumption, quantity_wh)]), owner
    )

    splits = [
        args["parentSliceId"] for name, args in all_events(chain, receipt) if name == "SliceSplit"
    ]
    assert splits == [
        s for s, did in ((production, split_production), (consumption, split_consumption)) if did
    ]
    (claimed,) = chain.events(receipt, "SliceClaimed")
    assert claimed.args.claimId == claim_id
    assert claimed.args.quantityWh == quantity_wh
    assert slice_of(chain, claim_id) == Slice(owner, PRODUCTION, CLAIMED, quantity_wh, production)
    assert slice_of(chain, claimed.args.consumptionSliceId).quantity_wh == quantity_wh
    assert live_sum(chain, production) == production_wh
    assert live_sum(chain, consumption) == 400
    assert_wallet_counts_match_slices(chain, owner)


def test_claim_batch_of_one_wh_more_than_a_slice_holds_reverts(
    chain: Chain, issuer: str, owner: str
) -> None:
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, 400), (owner, CONSUMPTION, 400)]
    )

    with chain.reverts("CertificateRegistryInsufficientQuantity", production, 400, 401):
        chain.registry.functions.claimBatch([(production, consumption, 401)]).transact(
            {"from": owner}
        )


def test_claim_batch_of_a_larger_consumption_reverts_on_that_side(
    chain: Chain, issuer: str, owner: str
) -> None:
    production, consumption = issue(
        chain, issuer, [(owner, PRODUCTION, 500), (owner, CONSUMPTION, 300)]
    )

    with chain.reverts("CertificateRegistryInsufficientQuantity", consumption, 300, 301):
        chain.registry.functions.claimBatch([(production, consumption, 301)]).transact(
            {"from": owner}
        )
    assert slice_of(chain, production) == Slice(owner, PRODUCTION, ACTIVE, 500, production)


def test_claim_batch_across_wallets_by_an_operator_of_both(
    chain: Chain, issuer: str, owner: str, buyer: str, stranger: str
) -> None:
    p1, c1, p2, c2 = issue(
        chain,
        issuer,
        [
            (owner, PRODUCTION, 10),
            (buyer, CONSUMPTION, 10),
            (owner, PRODUCTION, 20),
            (buyer, CONSUMPTION, 20),
        ],
    )
    set_operator(chain, owner, stranger)
    set_operator(chain, buyer, stranger)

    chain.send(chain.registry.functions.claimBatch([(p1, c1, 0), (p2, c2, 0)]), stranger)

    assert [slice_of(chain, s).state for s in (p1, c1, p2, c2)] == [CLAIMED] * 4
    assert wallet_of(chain, owner) == (False, 0)
    assert wallet_of(chain, buyer) == (False, 0)


def _claim_revert_cases(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> dict[str, tuple[list[tuple[int, int, int]], str, tuple[Any, ...]]]:
    """Per case: a batch whose first entry is valid and whose second breaks one rule."""
    p1, c1, p2, c2, pb, c_big = issue(
        chain,
        issuer,
        [
            (owner, PRODUCTION, 100),
            (owner, CONSUMPTION, 100),
            (owner, PRODUCTION, 50),
            (owner, CONSUMPTION, 50),
            (buyer, PRODUCTION, 50),
            (owner, CONSUMPTION, 60),
        ],
    )
    unknown = chain.registry.functions.nextId().call() + 10
    ok = (p1, c1, 0)
    return {
        "unknown_slice": ([ok, (unknown, c2, 0)], "CertificateRegistryUnknownSlice", (unknown,)),
        "claimed_in_the_same_batch": (
            [ok, (p1, c2, 0)],
            "CertificateRegistrySliceNotActive",
            (p1, CLAIMED),
        ),
        "kind_mismatch": ([ok, (c2, p2, 0)], "CertificateRegistryKindMismatch", (c2, p2)),
        "unauthorized": ([ok, (pb, c2, 0)], "CertificateRegistryUnauthorized", (owner, buyer)),
        "quantity_mismatch_whole": (
            [ok, (p2, c_big, 0)],
            "CertificateRegistryQuantityMismatch",
            (p2, 50, c_big, 60),
        ),
        "one_wh_over": (
            [ok, (p2, c2, 51)],
            "CertificateRegistryInsufficientQuantity",
            (p2, 50, 51),
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "unknown_slice",
        "claimed_in_the_same_batch",
        "kind_mismatch",
        "unauthorized",
        "quantity_mismatch_whole",
        "one_wh_over",
    ],
)
def test_claim_batch_reverts_whole_with_the_failing_entrys_error(
    chain: Chain, issuer: str, owner: str, buyer: str, case: str
) -> None:
    entries, error, args = _claim_revert_cases(chain, issuer, owner, buyer)[case]
    before = registry_state(chain, owner, buyer)

    with chain.reverts(error, *args):
        chain.registry.functions.claimBatch(entries).transact({"from": owner})
    assert registry_state(chain, owner, buyer) == before


def test_claim_batch_names_the_previous_entrys_remainder_with_slice_zero(
    chain: Chain, issuer: str, owner: str
) -> None:
    """One consumption slice of 1000 Wh claimed against three production slices in one
    batch: entries after the first name its remainder as 0 (advanced claims)."""
    p1, p2, p3, consumption = issue(
        chain,
        issuer,
        [
            (owner, PRODUCTION, 300),
            (owner, PRODUCTION, 500),
            (owner, PRODUCTION, 400),
            (owner, CONSUMPTION, 1000),
        ],
    )

    claim_ids, receipt = transact(
        chain,
        chain.registry.functions.claimBatch([(p1, consumption, 300), (p2, 0, 500), (p3, 0, 200)]),
        owner,
    )

    claimed = [
        (e.args.productionSliceId, e.args.consumptionSliceId, e.args.quantityWh)
        for e in chain.events(receipt, "SliceClaimed")
    ]
    # consumption 1000 -> c1 300 + r1 700; r1 -> c2 500 + r2 200 (claimed whole); p3 -> 200 + 200
    c1, r1 = consumption + 1, consumption + 2
    c2, r2 = consumption + 3, consumption + 4
    p3_part, p3_rest = consumption + 5, consumption + 6
    assert claimed == [(p1, c1, 300), (p2, c2, 500), (p3_part, r2, 200)]
    assert claim_ids == [p1, p2, p3_part]
    assert live_sum(chain, consumption) == 1000
    assert {s: slice_of(chain, s).state for s in (c1, r1, c2, r2)} == {
        c1: CLAIMED,
        r1: REMOVED,
        c2: CLAIMED,
        r2: CLAIMED,
    }
    assert slice_of(chain, p3_rest) == Slice(owner, PRODUCTION, ACTIVE, 200, p3)
    assert_wallet_counts_match_slices(chain, owner)


@pytest.mark.parametrize(
    ("entries", "entry", "kind"),
    [
        ([(0, 2, 10)], 0, PRODUCTION),
        ([(1, 2, 0), (3, 0, 10)], 1, CONSUMPTION),  # a whole claim leaves no remainder
        ([(1, 2, 100), (3, 0, 10)], 1, CONSUMPTION),  # nor does a claim of exactly the slice
    ],
    ids=["first_entry", "after_a_whole_claim", "after_an_exact_part"],
)
def test_claim_batch_naming_a_remainder_that_does_not_exist_reverts(
    chain: Chain,
    issuer: str,
    owner: str,
    entries: list[tuple[int, int, int]],
    entry: int,
    kind: int,
) -> None:
    issue(
        chain,
        issuer,
        [(owner, PRODUCTION, 100), (owner, CONSUMPTION, 100), (owner, PRODUCTION, 100)],
    )
    before = registry_state(chain, owner)

    with chain.reverts("CertificateRegistryNoRemainder", entry, kind):
        chain.registry.functions.claimBatch(entries).transact({"from": owner})
    assert registry_state(chain, owner) == before


def test_claim_batch_with_no_entries_reverts(chain: Chain, owner: str) -> None:
    with chain.reverts("CertificateRegistryEmptyList"):
        chain.registry.functions.claimBatch([]).transact({"from": owner})


def test_claim_batch_is_the_sequence_of_single_claims(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    """Same slices, wallets, return values and events, in the same order, as claim/claimPart."""
    p1, c1, p2, c2, p3, c3 = issue(
        chain,
        issuer,
        [
            (owner, PRODUCTION, 100),
            (owner, CONSUMPTION, 100),
            (owner, PRODUCTION, 80),
            (buyer, CONSUMPTION, 50),
            (buyer, PRODUCTION, 30),
            (owner, CONSUMPTION, 90),
        ],
    )
    set_operator(chain, buyer, owner)
    # whole; production split; both split, across wallets (owner operates buyer's)
    entries = [(p1, c1, 0), (p2, c2, 50), (p3, c3, 29)]
    start = snapshot(chain)

    returned, receipt = transact(chain, chain.registry.functions.claimBatch(entries), owner)
    bulk = (returned, all_events(chain, receipt), registry_state(chain, owner, buyer))
    revert_to(chain, start)

    singles_returned, singles_events = [], []
    for production, consumption, quantity_wh in entries:
        call = (
            chain.registry.functions.claim(production, consumption)
            if quantity_wh == 0
            else chain.registry.functions.claimPart(production, consumption, quantity_wh)
        )
        claim_id, single_receipt = transact(chain, call, owner)
        singles_returned.append(claim_id)
        singles_events += all_events(chain, single_receipt)
    assert bulk == (singles_returned, singles_events, registry_state(chain, owner, buyer))


# ------------------------------------------------------------------ transferBatch


def test_transfer_batch_of_whole_slices_moves_each_and_emits_the_single_transfers_events(
    chain: Chain, issuer: str, owner: str, buyer: str
) -> None:
    s1, s2, s3 = issue(
        chain, issuer, [(owner, PRODUCTION, 10), (owner, CONSUMPTION, 20), (owner, PRODUCTION, 30)]
    )

    returned, receipt = transact(
        chain,
        chain.registry.functions.transferBatch([(s1, 0, buyer), (s2, 0, buyer), (s3, 0, owner)]),
        owner,
    )

    assert returned == [s1, s2, s3]
    assert all_events(chain, receipt) == [
        ("SliceTransferred", {"sliceId": s1, "from": owner, "to": buyer}),
        ("SliceTransferred", {"sliceId": s2, "from": owner, "to": buyer}),
        ("SliceTransferred", {"sliceId": s3, "from": owner, "to": owner}),
    ]
    assert slice_of(chain, s1) == Slice(buyer, PRODUCTION, ACTIVE, 10, s1)
    assert slice_of(chain, s2) == Slice(buyer, CONSUMPTION, ACTIVE, 20, s2)
    assert slice_of(chain, s3) == Slice(owner, PRODUCTION, ACTIVE, 30, s3)
    assert wallet_of(chain, owner) == (False, 1)
    assert wallet_of(chain, buyer) == (False, 2)


@pytest.mark.parametrize(
    ("quantity_wh", "splits"),
    [(0, False), (100, False), (99, True), (1, True)],
    ids=["zero_means_whole", "exactly_size", "size_minus_1", "one_wh"],
)
def test_transfer_batch_with_a_quantity_splits_only_below_the_slice(
    chain: Chain, issuer: str, owner: str, buyer: str, quantity_wh: int, splits: bool
) -> None:
    cert = issue_one(chain, issuer, owner, 100)

    (moved,), receipt = transact(
        chain, chain.registry.functions.transferBatch([(cert, quantity_wh, buyer)]), owner
    )

    events = all_events(chain, receipt)
    if splits:
        assert [name for name, _ in events] == ["SliceSplit"]
        assert events[0][1]["owners"] == [buyer, owner]
        assert events[0][1]["quantitiesWh"] == [quantity_wh, 100 - quantity_wh]
        assert moved == cert + 1
        assert slice_of(chain, moved) == Slice(buyer, PRODUCTION, ACTIVE, quantity_wh, cert)
        assert slice_of(chain, cert).state == REMOVED
    else:
        assert events == [("SliceTransferred", {"sliceId": cert, "from": owner, "to": buyer})]
        assert moved == cert
        assert slice_of(chain, cert) == Slice(buyer, PRODUCTION, ACTIVE, 100, cert)
    assert live_sum(chain, cert) == 100
    assert_wallet_counts_match_slices(chain, owner, buyer)


def test_transfer_batch_passes_a_received_slice_on_in_the_same_batch(
    chain: Chain, issuer: str, owner: str, buyer: str, stranger: str
) -> None:
    """An operator of both wallets: owner -> buyer, then buyer -> stranger, then back."""
    s1, s2 = issue(chain, issuer, [(owner, PRODUCTION, 10), (owner, PRODUCTION, 20)])
    set_operator(chain, owner, stranger)
    set_operator(chain, buyer, stranger)

    chain.send(
        chain.registry.functions.transferBatch(
            [(s1, 0, buyer), (s2, 0, buyer), (s1, 0, stranger), (s2, 5, owner), (s1, 0, stranger)]
        ),
        stranger,
    )

    assert slice_of(chain, s1).owner == stranger
    assert slice_of(chain, s2).state == REMOVED
    assert wallet_of(chain, owner) == (False, 1)  # the 5 Wh child of s2
    assert wallet_of(chain, buyer) == (False, 1)  # the 15 Wh rest of s2
    assert wallet_of(chain, stranger) == (False, 1)
    assert_wallet_counts_match_slices(chain, owner, buyer, stranger)


def _transfer_revert_cases(
    chain: Chain, issuer: str, owner: str, buyer: str, stranger: str
) -> dict[str, tuple[list[tuple[int, int, str]], str, tuple[Any, ...]]]:
    """Per case: a batch whose first entry is valid and whose second breaks one rule."""
    s1, s2, s_buyer, s_claimed, c_claimed = issue(
        chain,
        issuer,
        [
            (owner, PRODUCTION, 100),
            (owner, PRODUCTION, 50),
            (buyer, PRODUCTION, 50),
            (owner, PRODUCTION, 7),
            (owner, CONSUMPTION, 7),
        ],
    )
    chain.send(chain.registry.functions.claim(s_claimed, c_claimed), owner)
    close_wallet(chain, stranger)
    unknown = chain.registry.functions.nextId().call() + 10
    ok = (s1, 0, buyer)
    return {
        "unknown_slice": ([ok, (unknown, 0, buyer)], "CertificateRegistryUnknownSlice", (unknown,)),
        "not_active": (
            [ok, (s_claimed, 0, buyer)],
            "CertificateRegistrySliceNotActive",
            (s_claimed, CLAIMED),
        ),
        "unauthorized": (
            [ok, (s_buyer, 0, owner)],
            "CertificateRegistryUnauthorized",
            (owner, buyer),
        ),
        "moved_away_in_the_same_batch": (
            [ok, (s1, 0, owner)],
            "CertificateRegistryUnauthorized",
            (owner, buyer),
        ),
        "whole_to_zero_address": (
            [ok, (s2, 0, ZERO_ADDRESS)],
            "CertificateRegistryInvalidAddress",
            (ZERO_ADDRESS,),
        ),
        "first_entry_whole_to_zero_address": (
            [(s2, 0, ZERO_ADDRESS)],
            "CertificateRegistryInvalidAddress",
            (ZERO_ADDRESS,),
        ),
        "part_to_zero_address": (
            [ok, (s2, 5, ZERO_ADDRESS)],
            "CertificateRegistryInvalidAddress",
            (ZERO_ADDRESS,),
        ),
        "one_wh_over": (
            [ok, (s2, 51, buyer)],
            "CertificateRegistryInsufficientQuantity",
            (s2, 50, 51),
        ),
        "whole_to_closed_wallet": (
            [ok, (s2, 0, stranger)],
            "CertificateRegistryWalletClosed",
            (stranger,),
        ),
        "part_to_closed_wallet": (
            [ok, (s2, 5, stranger)],
            "CertificateRegistryWalletClosed",
            (stranger,),
        ),
    }


TRANSFER_REVERT_CASES = [
    "unknown_slice",
    "not_active",
    "unauthorized",
    "moved_away_in_the_same_batch",
    "whole_to_zero_address",
    "first_entry_whole_to_zero_address",
    "part_to_zero_address",
    "one_wh_over",
    "whole_to_closed_wallet",
    "part_to_closed_wallet",
]


@pytest.mark.parametrize("case", TRANSFER_REVERT_CASES)
def test_transfer_batch_reverts_whole_with_the_failing_entrys_error(
    chain: Chain, issuer: str, owner: str, buyer: str, stranger: str, case: str
) -> None:
    entries, error, args = _transfer_revert_cases(chain, issuer, owner, buyer, stranger)[case]
    before = registry_state(chain, owner, buyer, stranger)

    with chain.reverts(error, *args):
        chain.registry.functions.transferBatch(entries).transact({"from": owner})
    assert registry_state(chain, owner, buyer, stranger) == before


def test_transfer_batch_with_no_entries_reverts(chain: Chain, owner: str) -> None:
    with chain.reverts("CertificateRegistryEmptyList"):
        chain.registry.functions.transferBatch([]).transact({"from": owner})


def test_transfer_batch_is_the_sequence_of_single_transfers(
    chain: Chain, issuer: str, owner: str, buyer: str, stranger: str
) -> None:
    """Same slices, wallets, return values and events, in the same order, as
    transfer/transferPart."""
    s1, s2, s3, s4 = issue(
        chain,
        issuer,
        [
            (owner, PRODUCTION, 100),
            (owner, CONSUMPTION, 80),
            (buyer, PRODUCTION, 30),
            (owner, PRODUCTION, 60),
        ],
    )
    set_operator(chain, buyer, owner)
    # whole; a part; another wallet's slice as its operator; to oneself; exactly the slice
    entries = [
        (s1, 0, buyer),
        (s2, 30, stranger),
        (s3, 0, stranger),
        (s4, 0, owner),
        (s4, 60, buyer),
    ]
    start = snapshot(chain)

    returned, receipt = transact(chain, chain.registry.functions.transferBatch(entries), owner)
    bulk = (returned, all_events(chain, receipt), registry_state(chain, owner, buyer, stranger))
    revert_to(chain, start)

    singles_returned, singles_events = [], []
    for slice_id, quantity_wh, to in entries:
        if quantity_wh == 0:
            single_receipt = chain.send(chain.registry.functions.transfer(slice_id, to), owner)
            singles_returned.append(slice_id)
        else:
            moved, single_receipt = transact(
                chain, chain.registry.functions.transferPart(slice_id, quantity_wh, to), owner
            )
            singles_returned.append(moved)
        singles_events += all_events(chain, single_receipt)
    assert bulk == (singles_returned, singles_events, registry_state(chain, owner, buyer, stranger))
