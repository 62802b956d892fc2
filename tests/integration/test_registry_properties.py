"""Property: any sequence of split / transfer / claim / withdraw / close / operator commands
keeps every certificate's non-Removed slices summing to its quantity, and the chain agrees
with the pure model of the rules in granular.domain.slices, step by step: same successes,
same custom errors with the same values, same slices and wallets afterwards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3
from web3.exceptions import ContractCustomError

from granular.domain.slices import (
    ZERO_ADDRESS,
    Issuance,
    Kind,
    Part,
    RegistryModel,
    SliceRuleViolation,
    SliceState,
)
from tests.integration.chain import Chain, normalise

WALLETS = 4  # indices into the wallet pool; the issuer is wallet 0


@dataclass(frozen=True)
class Command:
    name: str
    caller: int
    args: tuple[Any, ...]


slice_ids = st.integers(min_value=1, max_value=24)
wallets = st.integers(min_value=0, max_value=WALLETS - 1)
targets = st.one_of(wallets, st.just(-1))  # -1: the zero address
quantities = st.integers(min_value=0, max_value=1300)

commands = st.one_of(
    st.builds(
        lambda c, s, parts: Command("split", c, (s, parts)),
        wallets,
        slice_ids,
        st.lists(st.tuples(quantities, targets), min_size=0, max_size=3),
    ),
    st.builds(lambda c, s, t: Command("transfer", c, (s, t)), wallets, slice_ids, targets),
    st.builds(
        lambda c, s, q, t: Command("transfer_part", c, (s, q, t)),
        wallets,
        slice_ids,
        quantities,
        targets,
    ),
    st.builds(lambda c, p, k: Command("claim", c, (p, k)), wallets, slice_ids, slice_ids),
    st.builds(
        lambda c, p, k, q: Command("claim_part", c, (p, k, q)),
        wallets,
        slice_ids,
        slice_ids,
        quantities,
    ),
    st.builds(lambda c, s: Command("withdraw", c, (s,)), wallets, slice_ids),
    st.builds(lambda c: Command("close_wallet", c, ()), wallets),
    st.builds(lambda c, o, a: Command("set_operator", c, (o, a)), wallets, targets, st.booleans()),
)

INITIAL = [  # (holder wallet, kind, quantity): two holders, both kinds, some equal quantities
    (1, Kind.PRODUCTION, 1000),
    (1, Kind.CONSUMPTION, 1000),
    (2, Kind.PRODUCTION, 700),
    (2, Kind.CONSUMPTION, 300),
    (1, Kind.CONSUMPTION, 1200),
]


def _run_chain(chain: Chain, call: Any, sender: str) -> tuple[str, tuple[Any, ...]] | None:
    """None when the transaction succeeded, else the decoded custom error."""
    try:
        chain.send(call, sender)
    except ContractCustomError as error:
        decoded = chain.decoder.decode(str(error.data))
        assert decoded is not None, f"unknown revert data {error.data}"
        return decoded.name, tuple(normalise(v) for v in decoded.args)
    return None


@pytest.mark.parametrize("seed_batch", ["mixed-kinds"])
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(commands, min_size=1, max_size=12))
def test_chain_matches_model_and_conserves_quantity(
    chain: Chain,
    w3: Web3,
    issuer: str,
    owner: str,
    buyer: str,
    stranger: str,
    seed_batch: str,
    steps: list[Command],
) -> None:
    pool = [issuer, owner, buyer, stranger]
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        _check_sequence(chain, w3, pool, steps)
    finally:
        w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]


def _check_sequence(chain: Chain, w3: Web3, pool: list[str], steps: list[Command]) -> None:
    registry = chain.registry.functions
    role = registry.ISSUER_ROLE().call()
    model = RegistryModel(issuers={pool[0]})

    def address(index: int) -> str:
        return ZERO_ADDRESS if index < 0 else pool[index]

    items = [
        Issuance(pool[w], kind, qty, bytes([i]) * 32) for i, (w, kind, qty) in enumerate(INITIAL)
    ]
    batch_id = b"\x01" * 32
    model.issue_batch(pool[0], batch_id, items)
    chain.send(
        registry.issueBatch(
            batch_id, [(i.owner, int(i.kind), i.quantity_wh, i.data_hash) for i in items]
        ),
        pool[0],
    )

    for step in steps:
        caller = pool[step.caller]
        model_call, chain_call = _bind(step, model, registry, caller, address)
        try:
            model_call()
            expected = None
        except SliceRuleViolation as violation:
            values = tuple(role if v == "ISSUER_ROLE" else normalise(v) for v in violation.values)
            expected = (violation.error, values)
        outcome = _run_chain(chain, chain_call, caller)
        assert outcome == expected, f"{step}: chain {outcome}, model {expected}"

    next_id = registry.nextId().call()
    assert next_id == model.next_id
    for slice_id in range(1, next_id):
        owner_, kind, state, quantity, certificate = registry.sliceOf(slice_id).call()
        mirrored = model.slices[slice_id]
        assert (owner_, kind, state, quantity, certificate) == (
            mirrored.owner,
            int(mirrored.kind),
            int(mirrored.state),
            mirrored.quantity_wh,
            mirrored.certificate_id,
        ), f"slice {slice_id}"
    for wallet in pool:
        closed, active = registry.walletOf(wallet).call()
        assert (closed, active) == (wallet in model.closed, model.active_count.get(wallet, 0))
    for certificate_id, (_, _, quantity) in enumerate(INITIAL, start=1):
        assert model.certificate_total_wh(certificate_id) == quantity
        on_chain = sum(
            registry.sliceOf(i).call()[3]
            for i in range(1, next_id)
            if registry.sliceOf(i).call()[4] == certificate_id
            and registry.sliceOf(i).call()[2] != SliceState.REMOVED
        )
        assert on_chain == quantity


def _bind(
    step: Command,
    model: RegistryModel,
    registry: Any,
    caller: str,
    address: Callable[[int], str],
) -> tuple[Callable[[], Any], Any]:
    args = step.args
    if step.name == "split":
        slice_id, raw_parts = args
        parts = [Part(q, address(t)) for q, t in raw_parts]
        return (
            lambda: model.split(caller, slice_id, parts),
            registry.split(slice_id, [(p.quantity_wh, p.to) for p in parts]),
        )
    if step.name == "transfer":
        slice_id, target = args
        return lambda: model.transfer(caller, slice_id, address(target)), registry.transfer(
            slice_id, address(target)
        )
    if step.name == "transfer_part":
        slice_id, qty, target = args
        return (
            lambda: model.transfer_part(caller, slice_id, qty, address(target)),
            registry.transferPart(slice_id, qty, address(target)),
        )
    if step.name == "claim":
        production, consumption = args
        return lambda: model.claim(caller, production, consumption), registry.claim(
            production, consumption
        )
    if step.name == "claim_part":
        production, consumption, qty = args
        return (
            lambda: model.claim_part(caller, production, consumption, qty),
            registry.claimPart(production, consumption, qty),
        )
    if step.name == "withdraw":
        (slice_id,) = args
        return lambda: model.withdraw(caller, slice_id), registry.withdraw(slice_id)
    if step.name == "close_wallet":
        return lambda: model.close_wallet(caller), registry.closeWallet()
    operator, approved = args
    return (
        lambda: model.set_operator(caller, address(operator), approved),
        registry.setOperator(address(operator), approved),
    )
