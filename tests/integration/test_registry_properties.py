"""Property: any sequence of issue / split / transfer / claim / their bulk forms / withdraw /
close / operator commands keeps every certificate's non-Removed slices summing to its quantity,
and the chain agrees with the pure model of the rules in granular.domain.slices, step by step:
same successes, same return values of the bulk commands, same custom errors with the same
values, same slices and wallets afterwards.

Quantities are biased to the edges where an off-by-one hides: half of them are drawn as "the
slice's quantity - 1, + 0 or + 1" (for a split part: what the earlier parts left), resolved
against the model when the step runs; issued quantities straddle 2**48."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from web3 import Web3
from web3.exceptions import ContractCustomError

from granular.domain.slices import (
    MAX_QUANTITY_WH,
    ZERO_ADDRESS,
    Claim,
    Issuance,
    Kind,
    Part,
    RegistryModel,
    SliceRuleViolation,
    SliceState,
    Transfer,
)
from tests.integration.chain import Chain, normalise

WALLETS = 4  # indices into the wallet pool; the issuer is wallet 0
OWNER = -2  # as a caller: the owner of the step's first slice, acting for itself


@dataclass(frozen=True)
class Command:
    name: str
    caller: int
    args: tuple[Any, ...]


# Steps name their slices and quantities in terms the model resolves when the step runs, so
# that most steps reach the rules past "no such slice" and sit on the edges of quantities.
# A slice is an id, or (kind, n): the n-th Active slice of that kind (None: of any kind) in id
# order. A quantity is Wh, or (side, delta): the current quantity of the step's slice (side 0;
# for a claim the production slice, side 1 the consumption slice; for a split part what the
# earlier parts left; side 2: the smaller of a claim's two slices) plus delta.
SliceRef = int | tuple[Kind | None, int]
Quantity = int | tuple[int, int]


def _slices_of(kind: Kind | None, active_share: int = 3) -> st.SearchStrategy[SliceRef]:
    """`active_share` times in `active_share + 1` an Active slice of `kind`, else any id."""
    return st.builds(
        lambda pick, n, raw: (kind, n) if pick < active_share else raw,
        st.integers(min_value=0, max_value=active_share),
        st.integers(min_value=0, max_value=7),
        st.integers(min_value=1, max_value=24),
    )


any_slice = _slices_of(None)
production = _slices_of(Kind.PRODUCTION)
consumption = _slices_of(Kind.CONSUMPTION)
# A bulk command fails whole on any bad entry: its entries lean harder towards valid ones.
bulk_any_slice = _slices_of(None, active_share=7)
bulk_production = _slices_of(Kind.PRODUCTION, active_share=7)
bulk_consumption = _slices_of(Kind.CONSUMPTION, active_share=7)
wallets = st.integers(min_value=0, max_value=WALLETS - 1)
callers = st.one_of(st.just(OWNER), st.just(OWNER), wallets)
targets = st.one_of(wallets, st.just(-1))  # -1: the zero address
bulk_targets = st.builds(  # the zero address one time in eight
    lambda pick, wallet: -1 if pick == 0 else wallet, st.integers(min_value=0, max_value=7), wallets
)
edges = st.sampled_from([-1, 0, 1])
quantities: st.SearchStrategy[Quantity] = st.one_of(
    st.integers(min_value=0, max_value=1300),
    st.tuples(st.sampled_from([0, 1, 2]), edges),
)
bulk_quantities: st.SearchStrategy[Quantity] = st.builds(
    # Half exact (the whole slice, or the smaller claim side: valid), half any quantity.
    lambda pick, other: (2, 0) if pick == 0 else (0 if pick == 1 else other),
    st.integers(min_value=0, max_value=3),
    quantities,
)


def _bulk(entry: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """One to three entries; one time in ten none."""
    return st.builds(
        lambda pick, entries: [] if pick == 0 else entries,
        st.integers(min_value=0, max_value=9),
        st.lists(entry, min_size=1, max_size=3),
    )


issued_quantities = st.one_of(
    st.integers(min_value=0, max_value=1300),
    st.sampled_from([MAX_QUANTITY_WH - 1, MAX_QUANTITY_WH, MAX_QUANTITY_WH + 1]),
)

issue_command = st.builds(
    lambda c, b, items: Command("issue", c, (b, items)),
    wallets,
    st.integers(min_value=1, max_value=3),  # 1 is the initial batch: AlreadyIssued
    st.lists(
        st.tuples(targets, st.sampled_from(list(Kind)), issued_quantities),
        min_size=0,
        max_size=3,
    ),
)
split_command = st.builds(
    lambda c, s, parts: Command("split", c, (s, parts)),
    callers,
    any_slice,
    st.lists(st.tuples(quantities, targets), min_size=0, max_size=3),
)


def _or_remainder(ref: st.SearchStrategy[SliceRef]) -> st.SearchStrategy[SliceRef]:
    """One time in six slice 0: the remainder the previous claim entry left on that side."""
    return st.builds(
        lambda pick, found: 0 if pick == 0 else found, st.integers(min_value=0, max_value=5), ref
    )


claim_batch_command = st.builds(
    lambda c, entries: Command("claim_batch", c, (entries,)),
    callers,
    _bulk(
        st.tuples(_or_remainder(bulk_production), _or_remainder(bulk_consumption), bulk_quantities)
    ),
)
transfer_batch_command = st.builds(
    lambda c, entries: Command("transfer_batch", c, (entries,)),
    callers,
    _bulk(st.tuples(bulk_any_slice, bulk_quantities, bulk_targets)),
)
set_operator_command = st.builds(
    lambda c, o, a: Command("set_operator", c, (o, a)), wallets, targets, st.booleans()
)
close_wallet_command = st.builds(lambda c: Command("close_wallet", c, ()), wallets)

MIXES = {
    "every-command": st.one_of(
        issue_command,
        split_command,
        st.builds(lambda c, s, t: Command("transfer", c, (s, t)), callers, any_slice, targets),
        st.builds(
            lambda c, s, q, t: Command("transfer_part", c, (s, q, t)),
            callers,
            any_slice,
            quantities,
            targets,
        ),
        st.builds(lambda c, p, k: Command("claim", c, (p, k)), callers, production, consumption),
        st.builds(
            lambda c, p, k, q: Command("claim_part", c, (p, k, q)),
            callers,
            production,
            consumption,
            quantities,
        ),
        claim_batch_command,
        transfer_batch_command,
        st.builds(lambda c, s: Command("withdraw", c, (s,)), wallets, any_slice),
        close_wallet_command,
        set_operator_command,
    ),
    # Bulk commands, with the splits, operators and closed wallets that make their entries
    # differ in size, caller and receiver.
    "bulk-heavy": st.one_of(
        claim_batch_command,
        transfer_batch_command,
        split_command,
        set_operator_command,
        close_wallet_command,
    ),
}

INITIAL = [  # (holder wallet, kind, quantity): two holders, both kinds, some equal quantities
    (1, Kind.PRODUCTION, 1000),
    (1, Kind.CONSUMPTION, 1000),
    (2, Kind.PRODUCTION, 700),
    (2, Kind.CONSUMPTION, 300),
    (1, Kind.CONSUMPTION, 1200),
    (1, Kind.PRODUCTION, 1200),
    (2, Kind.CONSUMPTION, 700),
    (2, Kind.PRODUCTION, 300),
    (1, Kind.PRODUCTION, 1),
]


def _run_chain(
    chain: Chain, call: Any, sender: str, bulk: bool
) -> tuple[str, tuple[Any, ...]] | list[int] | None:
    """The decoded custom error of a revert; else a bulk command's returned ids, or None."""
    try:
        returned = call.call({"from": sender})
        chain.send(call, sender)
    except ContractCustomError as error:
        decoded = chain.decoder.decode(str(error.data))
        assert decoded is not None, f"unknown revert data {error.data}"
        return decoded.name, tuple(normalise(v) for v in decoded.args)
    return list(returned) if bulk else None


@pytest.mark.parametrize("mix", list(MIXES))
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_chain_matches_model_and_conserves_quantity(
    chain: Chain,
    w3: Web3,
    issuer: str,
    owner: str,
    buyer: str,
    stranger: str,
    mix: str,
    data: st.DataObject,
) -> None:
    steps = data.draw(st.lists(MIXES[mix], min_size=1, max_size=12), label="steps")
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
        caller, model_call, chain_call = _bind(step, model, registry, pool, address)
        try:
            returned = model_call()
            expected = returned if step.name.endswith("_batch") else None
        except SliceRuleViolation as violation:
            values = tuple(role if v == "ISSUER_ROLE" else normalise(v) for v in violation.values)
            expected = (violation.error, values)
        outcome = _run_chain(chain, chain_call, caller, step.name.endswith("_batch"))
        assert outcome == expected, f"{step}: chain {outcome}, model {expected}"
        event(f"{step.name}: {outcome[0] if isinstance(outcome, tuple) else 'succeeded'}")

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
    issued = {
        s.certificate_id: s.quantity_wh
        for s in model.slices.values()
        if s.slice_id == s.certificate_id
    }
    for certificate_id, (_, _, quantity) in enumerate(INITIAL, start=1):
        assert issued[certificate_id] == quantity
    on_chain = [registry.sliceOf(i).call() for i in range(1, next_id)]
    for certificate_id, quantity in issued.items():
        assert model.certificate_total_wh(certificate_id) == quantity
        live = sum(s[3] for s in on_chain if s[4] == certificate_id and s[2] != SliceState.REMOVED)
        assert live == quantity, f"certificate {certificate_id}"


def _bind(
    step: Command,
    model: RegistryModel,
    registry: Any,
    pool: list[str],
    address: Callable[[int], str],
) -> tuple[str, Callable[[], Any], Any]:
    """The step's caller, its model call and its contract call, resolved against the model."""
    args = step.args
    first_slice: list[int] = []  # the step's first slice, for a caller of OWNER
    bulk = step.name.endswith("_batch") and step.caller == OWNER

    def slice_id(ref: SliceRef) -> int:
        if isinstance(ref, int):
            found = ref
        else:
            kind, n = ref
            # A holder's bulk command names its own slices after the first.
            holder = (
                model.slices[first_slice[0]].owner
                if bulk and first_slice[0:1] and first_slice[0] in model.slices
                else None
            )
            active = sorted(
                s.slice_id
                for s in model.slices.values()
                if s.state == SliceState.ACTIVE and kind in (None, s.kind)
            )
            held = [i for i in active if model.slices[i].owner == holder]
            active = held or active
            found = active[n % len(active)] if active else 999
        first_slice.append(found)
        return found

    def size(found: int) -> int:
        held = model.slices.get(found)
        return 0 if held is None else held.quantity_wh

    def resolve(quantity: Quantity, *sizes: int) -> int:
        if isinstance(quantity, int):
            return quantity
        side, delta = quantity
        base = min(sizes) if side == 2 else sizes[min(side, len(sizes) - 1)]
        return max(base + delta, 0)

    def caller() -> str:
        if step.caller != OWNER:
            return pool[step.caller]
        held = model.slices.get(first_slice[0]) if first_slice else None
        return pool[1] if held is None else held.owner

    if step.name == "issue":
        batch, raw_items = args
        items = [
            Issuance(address(w), kind, qty, bytes([batch, n]) * 16)
            for n, (w, kind, qty) in enumerate(raw_items)
        ]
        batch_id = bytes([batch]) * 32
        who = caller()
        return (
            who,
            lambda: model.issue_batch(who, batch_id, items),
            registry.issueBatch(
                batch_id, [(i.owner, int(i.kind), i.quantity_wh, i.data_hash) for i in items]
            ),
        )
    if step.name == "claim_batch":
        (raw_claims,) = args
        claims = []
        for raw_p, raw_c, q in raw_claims:
            p, c = slice_id(raw_p), slice_id(raw_c)
            claims.append(Claim(p, c, resolve(q, size(p), size(c))))
        who = caller()
        return (
            who,
            lambda: model.claim_batch(who, claims),
            registry.claimBatch(
                [(c.production_id, c.consumption_id, c.quantity_wh) for c in claims]
            ),
        )
    if step.name == "transfer_batch":
        (raw_transfers,) = args
        transfers = []
        for raw_s, q, t in raw_transfers:
            s = slice_id(raw_s)
            transfers.append(Transfer(s, resolve(q, size(s)), address(t)))
        who = caller()
        return (
            who,
            lambda: model.transfer_batch(who, transfers),
            registry.transferBatch([(t.slice_id, t.quantity_wh, t.to) for t in transfers]),
        )
    if step.name == "split":
        raw_s, raw_parts = args
        s = slice_id(raw_s)
        parts = []
        left = size(s)
        for q, t in raw_parts:
            parts.append(Part(resolve(q, left), address(t)))
            left = max(left - parts[-1].quantity_wh, 0)
        who = caller()
        return (
            who,
            lambda: model.split(who, s, parts),
            registry.split(s, [(p.quantity_wh, p.to) for p in parts]),
        )
    if step.name == "transfer":
        raw_s, target = args
        s, to = slice_id(raw_s), address(target)
        who = caller()
        return who, lambda: model.transfer(who, s, to), registry.transfer(s, to)
    if step.name == "transfer_part":
        raw_s, raw_qty, target = args
        s, to = slice_id(raw_s), address(target)
        qty = resolve(raw_qty, size(s))
        who = caller()
        return (
            who,
            lambda: model.transfer_part(who, s, qty, to),
            registry.transferPart(s, qty, to),
        )
    if step.name == "claim":
        raw_p, raw_c = args
        p, c = slice_id(raw_p), slice_id(raw_c)
        who = caller()
        return who, lambda: model.claim(who, p, c), registry.claim(p, c)
    if step.name == "claim_part":
        raw_p, raw_c, raw_qty = args
        p, c = slice_id(raw_p), slice_id(raw_c)
        qty = resolve(raw_qty, size(p), size(c))
        who = caller()
        return who, lambda: model.claim_part(who, p, c, qty), registry.claimPart(p, c, qty)
    if step.name == "withdraw":
        (raw_s,) = args
        s = slice_id(raw_s)
        who = caller()
        return who, lambda: model.withdraw(who, s), registry.withdraw(s)
    who = caller()
    if step.name == "close_wallet":
        return who, lambda: model.close_wallet(who), registry.closeWallet()
    operator, approved = args
    return (
        who,
        lambda: model.set_operator(who, address(operator), approved),
        registry.setOperator(address(operator), approved),
    )
