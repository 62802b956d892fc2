"""The checks a relayed command passes before it is stored (domain/commands.py): each at
its edge, with no chain and no database (a dictionary stands in for the read port)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from granular.domain.commands import (
    BULK_CALL_GAS,
    BULK_ENTRY_GAS,
    CALLDATA_GAS_PER_BYTE,
    DEFAULT_REQUEST_GAS,
    FORWARDER_OVERHEAD_GAS,
    MAX_RELAY_GAS,
    MAX_REQUEST_GAS,
    MIN_REQUEST_GAS,
    NEW_SLICE_GAS,
    TX_BASE_GAS,
    Claim,
    ClaimBatch,
    CloseWallet,
    CommandRefused,
    ForwardRequest,
    GasOutOfRange,
    Issue,
    NonceOutOfOrder,
    NonceUsed,
    RelayTooLarge,
    RequestExpired,
    SetOperator,
    Transfer,
    TransferBatch,
    Withdraw,
    WrongSigner,
    check_commands,
    check_relay,
    proposed_gas,
    relay_gas_limit,
)
from granular.domain.slices import Kind, Slice, SliceState

OWNER = "0x" + "1" * 40
BUYER = "0x" + "2" * 40
OPERATOR = "0x" + "3" * 40
STRANGER = "0x" + "4" * 40
ISSUER = "0x" + "5" * 40
REGISTRY = "0x" + "9" * 40
NOW_S = 1_800_000_000


@dataclass
class View:
    """The read port over plain values."""

    slices: dict[int, Slice] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    operators: set[tuple[str, str]] = field(default_factory=set)

    def slice(self, slice_id: int) -> Slice | None:
        return self.slices.get(slice_id)

    def wallet(self, wallet: str) -> tuple[bool, int]:
        active = sum(
            1 for s in self.slices.values() if s.owner == wallet and s.state == SliceState.ACTIVE
        )
        return wallet in self.closed, active

    def is_operator(self, wallet: str, operator: str) -> bool:
        return (wallet, operator) in self.operators


def slice_(
    slice_id: int,
    quantity_wh: int,
    *,
    owner: str = OWNER,
    kind: Kind = Kind.PRODUCTION,
    state: SliceState = SliceState.ACTIVE,
) -> Slice:
    return Slice(slice_id, owner, kind, state, quantity_wh, slice_id)


def request(
    nonce: int = 0, *, deadline_s: int = NOW_S + 3600, gas: int = 300_000
) -> ForwardRequest:
    return ForwardRequest(OWNER, REGISTRY, 0, gas, nonce, deadline_s, b"")


def relay(
    *requests: ForwardRequest,
    signer: str = OWNER,
    chain_nonce: int = 0,
    pending: tuple[int, ...] = (),
    margin_s: int = 60,
) -> None:
    check_relay(
        list(requests),
        recovered=[signer] * len(requests),
        chain_time_s=NOW_S,
        chain_nonce=chain_nonce,
        pending_nonces=pending,
        margin_s=margin_s,
    )


# ------------------------------------------------------------------ the signed request


def test_a_request_signed_by_its_from_with_the_next_nonce_passes() -> None:
    relay(request(0))
    relay(request(5), chain_nonce=5)
    relay(request(7), chain_nonce=5, pending=(5, 6))
    relay(request(0), request(1), request(2))


def test_the_signer_must_be_from() -> None:
    with pytest.raises(WrongSigner) as raised:
        relay(request(0), signer=STRANGER)
    assert raised.value.details["recovered"] == STRANGER


@pytest.mark.parametrize(
    ("deadline_s", "passes"),
    [(NOW_S + 60, True), (NOW_S + 59, False), (NOW_S - 1, False)],
    ids=["at_the_margin", "1s_inside_the_margin", "past"],
)
def test_the_deadline_must_be_at_least_the_margin_ahead(deadline_s: int, passes: bool) -> None:
    if passes:
        relay(request(0, deadline_s=deadline_s))
        return
    with pytest.raises(RequestExpired):
        relay(request(0, deadline_s=deadline_s))


def test_a_nonce_used_on_chain_is_a_replay() -> None:
    with pytest.raises(NonceUsed) as raised:
        relay(request(4), chain_nonce=5)
    assert raised.value.details["usedBy"] == "on chain"


def test_a_nonce_held_by_a_request_in_flight_is_a_replay() -> None:
    with pytest.raises(NonceUsed) as raised:
        relay(request(6), chain_nonce=5, pending=(5, 6))
    assert raised.value.details["usedBy"] == "a request in flight"


@pytest.mark.parametrize(
    ("nonces", "expected"),
    [((1,), 0), ((0, 2), 1), ((0, 0), 1)],
    ids=["ahead", "gap_in_a_batch", "repeated_in_a_batch"],
)
def test_nonces_must_be_the_next_ones_in_order(nonces: tuple[int, ...], expected: int) -> None:
    with pytest.raises((NonceOutOfOrder, NonceUsed)) as raised:
        relay(*(request(n) for n in nonces))
    if isinstance(raised.value, NonceOutOfOrder):
        assert raised.value.details["expected"] == expected


@pytest.mark.parametrize(
    ("gas", "passes"),
    [
        (MIN_REQUEST_GAS, True),
        (MIN_REQUEST_GAS - 1, False),
        (MAX_REQUEST_GAS, True),
        (MAX_REQUEST_GAS + 1, False),
    ],
    ids=["min", "below_min", "max", "above_max"],
)
def test_the_forwarded_gas_is_bounded(gas: int, passes: bool) -> None:
    if passes:
        relay(request(0, gas=gas))
        return
    with pytest.raises(GasOutOfRange):
        relay(request(0, gas=gas))


def test_the_relay_gas_limit_covers_each_request_and_is_capped() -> None:
    assert relay_gas_limit([300_000], 500) == (
        TX_BASE_GAS + CALLDATA_GAS_PER_BYTE * 500 + 300_000 + FORWARDER_OVERHEAD_GAS
    )
    per_request = 100_000 + FORWARDER_OVERHEAD_GAS
    fits = (MAX_RELAY_GAS - TX_BASE_GAS) // per_request
    relay_gas_limit([100_000] * fits, 0)
    with pytest.raises(RelayTooLarge):
        relay_gas_limit([100_000] * (fits + 1), 0)


# ------------------------------------------------------------------ the registry's rules


def refused_rule(view: View, caller: str, *commands: object, issuer: bool = False) -> str:
    with pytest.raises(CommandRefused) as raised:
        check_commands(view, caller, list(commands), issuer=issuer)  # type: ignore[arg-type]
    return raised.value.rule


@pytest.mark.parametrize(
    ("quantity_wh", "rule"),
    [(1700, None), (1699, None), (1701, "CertificateRegistryInsufficientQuantity")],
    ids=["whole", "1Wh_under", "1Wh_over"],
)
def test_a_transfer_of_part_is_checked_at_the_slice_size(
    quantity_wh: int, rule: str | None
) -> None:
    view = View(slices={1: slice_(1, 1700)})
    command = Transfer(1, BUYER, quantity_wh)
    if rule is None:
        check_commands(view, OWNER, [command])
    else:
        assert refused_rule(view, OWNER, command) == rule


def test_only_the_owner_or_its_operator_moves_a_slice() -> None:
    view = View(slices={1: slice_(1, 10)}, operators={(OWNER, OPERATOR)})
    check_commands(view, OWNER, [Transfer(1, BUYER)])
    check_commands(view, OPERATOR, [Transfer(1, BUYER)])
    assert refused_rule(view, STRANGER, Transfer(1, STRANGER)) == "CertificateRegistryUnauthorized"


def test_nothing_goes_to_a_closed_wallet() -> None:
    view = View(slices={1: slice_(1, 10)}, closed={BUYER})
    assert refused_rule(view, OWNER, Transfer(1, BUYER)) == "CertificateRegistryWalletClosed"
    assert refused_rule(view, OWNER, Transfer(1, BUYER, 4)) == "CertificateRegistryWalletClosed"


def test_a_removed_or_unknown_slice_cannot_be_claimed() -> None:
    view = View(
        slices={
            1: slice_(1, 10, state=SliceState.REMOVED),
            2: slice_(2, 10, kind=Kind.CONSUMPTION),
            3: slice_(3, 10),
        }
    )
    assert refused_rule(view, OWNER, Claim(1, 2)) == "CertificateRegistrySliceNotActive"
    assert refused_rule(view, OWNER, Claim(9, 2)) == "CertificateRegistryUnknownSlice"
    assert refused_rule(view, OWNER, Claim(2, 3)) == "CertificateRegistryKindMismatch"
    check_commands(view, OWNER, [Claim(3, 2)])


def test_a_claim_of_unequal_slices_needs_a_quantity_within_both() -> None:
    view = View(slices={1: slice_(1, 500), 2: slice_(2, 600, kind=Kind.CONSUMPTION)})
    assert refused_rule(view, OWNER, Claim(1, 2)) == "CertificateRegistryQuantityMismatch"
    check_commands(view, OWNER, [Claim(1, 2, 500)])
    assert refused_rule(view, OWNER, Claim(1, 2, 501)) == "CertificateRegistryInsufficientQuantity"


def test_commands_in_a_list_see_the_effects_of_the_ones_before() -> None:
    view = View(slices={1: slice_(1, 10), 2: slice_(2, 20)})
    check_commands(view, OWNER, [Transfer(1, BUYER), Transfer(2, BUYER)])
    rule = refused_rule(view, OWNER, Transfer(1, BUYER), Transfer(1, STRANGER))
    assert rule == "CertificateRegistryUnauthorized"  # the first moved it to the buyer


def test_a_wallet_closes_only_without_active_slices() -> None:
    view = View(slices={1: slice_(1, 10)})
    assert refused_rule(view, OWNER, CloseWallet()) == "CertificateRegistryWalletHasActiveSlices"
    check_commands(view, BUYER, [CloseWallet()])
    check_commands(view, OWNER, [Transfer(1, BUYER), CloseWallet()])


def test_an_operator_is_neither_the_zero_address_nor_the_wallet() -> None:
    view = View()
    check_commands(view, OWNER, [SetOperator(OPERATOR, True)])
    assert refused_rule(view, OWNER, SetOperator(OWNER, True)) == (
        "CertificateRegistryInvalidOperator"
    )


def test_only_the_issuer_withdraws_or_issues() -> None:
    view = View(slices={1: slice_(1, 10)})
    check_commands(view, ISSUER, [Withdraw(1)], issuer=True)
    assert refused_rule(view, OWNER, Withdraw(1)) == "AccessControlUnauthorizedAccount"
    issue = Issue(OWNER, Kind.PRODUCTION, 5, b"\x01" * 32, b"\x02" * 32)
    check_commands(view, ISSUER, [issue], issuer=True)
    closed = View(closed={OWNER})
    assert refused_rule(closed, ISSUER, issue, issuer=True) == "CertificateRegistryWalletClosed"


def test_a_refusal_names_the_rule_and_its_values() -> None:
    view = View(slices={7: slice_(7, 1700)})
    with pytest.raises(CommandRefused) as raised:
        check_commands(view, OWNER, [Transfer(7, BUYER, 1701)])
    assert raised.value.code == "registry_rule_violation"
    assert raised.value.details == {
        "rule": "CertificateRegistryInsufficientQuantity",
        "values": [7, 1700, 1701],
        "command": 0,
    }


# ------------------------------------------------------------------ bulk commands


def test_a_claim_batch_naming_the_consumption_remainder_is_checked_entry_by_entry() -> None:
    view = View(
        {
            1: slice_(1, 300),
            2: slice_(2, 500),
            3: slice_(3, 1000, kind=Kind.CONSUMPTION),
        }
    )
    plan = ClaimBatch((Claim(1, 3, 300), Claim(2, 0, 500)))

    model = check_commands(view, OWNER, [plan])

    claimed = sorted(s.quantity_wh for s in model.slices.values() if s.state == SliceState.CLAIMED)
    assert claimed == [300, 300, 500, 500]
    assert [s.quantity_wh for s in model.slices.values() if s.state == SliceState.ACTIVE] == [200]

    # 201 Wh more than the remainder holds after the first entry: refused, naming entry 0's
    # remainder slice and the numbers the contract would revert with.
    with pytest.raises(CommandRefused) as refused:
        check_commands(view, OWNER, [ClaimBatch((Claim(1, 3, 300), Claim(2, 0, 701)))])
    assert refused.value.rule == "CertificateRegistryInsufficientQuantity"


def test_the_gas_proposed_for_a_bulk_command_counts_its_entries_and_new_slices() -> None:
    view = View({i: slice_(i, 100) for i in range(1, 11)})
    whole = TransferBatch(tuple(Transfer(i, BUYER) for i in range(1, 11)))
    parts = TransferBatch(tuple(Transfer(i, BUYER, 40) for i in range(1, 11)))

    assert proposed_gas(view, OWNER, Transfer(1, BUYER)) == DEFAULT_REQUEST_GAS
    assert proposed_gas(view, OWNER, whole) == max(
        DEFAULT_REQUEST_GAS, BULK_CALL_GAS + 10 * BULK_ENTRY_GAS
    )
    # each part splits its slice in two: 20 new slices
    assert proposed_gas(view, OWNER, parts) == BULK_CALL_GAS + 10 * BULK_ENTRY_GAS + 20 * (
        NEW_SLICE_GAS
    )
    assert proposed_gas(view, OWNER, parts) <= MAX_REQUEST_GAS
