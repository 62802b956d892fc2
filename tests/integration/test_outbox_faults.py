"""Faults of the outbox against a real anvil, on SQLite and PostgreSQL. After each, the chain
and the database agree: every confirmed key minted exactly once, nothing else of ours mined."""

from __future__ import annotations

import json
import logging
import math

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.anvil import Anvil
from granular.adapters.db.outbox import RequestState
from granular.domain.gas import Eip1559Fees, FeePolicy, Wei
from granular.services.outbox import (
    AFTER_BROADCAST_BEFORE_MARK,
    AFTER_COMMIT_BEFORE_BROADCAST,
    LOGGER_NAME,
    fees_of,
)
from tests.integration.chain import Chain
from tests.integration.outbox_helpers import (
    Clock,
    SimulatedCrash,
    _close_senders,  # noqa: F401  (autouse fixture)
    all_final,
    assert_chain_agrees,
    automine_off,
    crash_at,
    drive,
    make_sender,
    mint_count,
    requests_of,
    rpc,
    states,
    submit_mints,
)


def test_crash_between_commit_and_broadcast_sends_the_stored_attempt_on_restart(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
) -> None:
    keys = ["c1", "c2", "c3"]
    submit_mints(sessions, chain.registry, issuer_account.address, keys, owner=owner)
    nonce_before = chain.w3.eth.get_transaction_count(issuer_account.address, "pending")
    crashing = make_sender(
        engine, anvil.url, issuer_account, fault=crash_at(AFTER_COMMIT_BEFORE_BROADCAST)
    )
    with pytest.raises(SimulatedCrash):
        crashing.send_once()
    stored = requests_of(sessions)
    assert {r.state for r in stored} == {RequestState.SIGNED}
    assert all(len(r.attempts) == 1 and r.attempts[0].sent_at is None for r in stored)
    assert chain.w3.eth.get_transaction_count(issuer_account.address, "pending") == nonce_before
    signed_hashes = {r.attempts[0].tx_hash for r in stored}
    crashing.close()  # the process is gone; so is its lease

    restarted = make_sender(engine, anvil.url, issuer_account)
    drive(restarted, lambda: all_final(sessions))

    done = requests_of(sessions)
    assert {r.state for r in done} == {RequestState.CONFIRMED}
    assert {r.tx_hash for r in done} == signed_hashes  # the stored bytes, not a new signature
    assert all(len(r.attempts) == 1 for r in done)
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


@pytest.mark.parametrize(
    "mined_meanwhile", [True, False], ids=["mined while down", "still in the node's pool"]
)
def test_crash_after_broadcast_before_it_is_recorded_counts_as_sent_on_restart(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
    caplog: pytest.LogCaptureFixture,
    mined_meanwhile: bool,
) -> None:
    """Mined meanwhile: the restart finds the receipts. Still in the pool: the restart
    broadcasts the stored bytes again and the node's "already imported" counts as sent."""
    keys = ["b1", "b2"]
    submit_mints(sessions, chain.registry, issuer_account.address, keys, owner=owner)
    crashing = make_sender(
        engine, anvil.url, issuer_account, fault=crash_at(AFTER_BROADCAST_BEFORE_MARK)
    )
    rpc(chain.w3, "evm_setAutomine", mined_meanwhile)
    try:
        with pytest.raises(SimulatedCrash):
            crashing.send_once()
        crashing.close()
        # The node has what the database still calls signed.
        stored = requests_of(sessions)
        assert {r.state for r in stored} == {RequestState.SIGNED}
        for request in stored:
            assert rpc(chain.w3, "eth_getTransactionByHash", request.attempts[0].tx_hash)
        assert mint_count(chain.registry) == (2 if mined_meanwhile else 0)

        restarted = make_sender(engine, anvil.url, issuer_account)
        with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
            restarted.send_once()
            if not mined_meanwhile:
                assert set(states(sessions).values()) == {RequestState.SENT}
                rpc(chain.w3, "evm_mine")
            drive(restarted, lambda: all_final(sessions))
    finally:
        rpc(chain.w3, "evm_setAutomine", True)

    assert set(states(sessions).values()) == {RequestState.CONFIRMED}
    assert all(len(r.attempts) == 1 for r in requests_of(sessions))
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert not any(line.get("alert") == "broadcast_rejected" for line in lines)
    sent = [line["node"] for line in lines if line["event"] == "sent"]
    assert sent == ([] if mined_meanwhile else ["known", "known"])
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


def test_a_replacement_that_loses_the_race_to_the_original_counts_as_sent(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The original is mined between the replacement's commit and its broadcast: the node's
    "nonce too low" counts as sent, and the caller gets the original's hash."""
    clock = Clock()
    armed: list[bool] = []

    def mine_the_original(point: str) -> None:
        if point == AFTER_COMMIT_BEFORE_BROADCAST and armed:
            armed.clear()
            rpc(chain.w3, "evm_mine")

    submit_mints(sessions, chain.registry, issuer_account.address, ["raced"], owner=owner)
    sender = make_sender(engine, anvil.url, issuer_account, clock=clock, fault=mine_the_original)
    with automine_off(chain.w3), caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        sender.send_once()
        (request,) = requests_of(sessions)
        original = request.attempts[0]
        clock.advance(sender.config.fee_policy.fast.deadline_s)
        armed.append(True)
        assert sender.send_once().replaced == 1
        (request,) = requests_of(sessions)
        replacement = request.attempts[1]
        assert replacement.sent_at is not None
        reports = drive(sender, lambda: all_final(sessions))

    (request,) = requests_of(sessions)
    assert request.state is RequestState.CONFIRMED and request.tx_hash == original.tx_hash
    (outcome,) = [o for r in reports for o in r.finished]
    assert outcome.tx_hash == original.tx_hash
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert not any(line.get("alert") == "broadcast_rejected" for line in lines)
    sent = [line["node"] for line in lines if line["event"] == "sent"]
    assert sent == ["accepted", "nonce_used"]  # the original, then the replacement
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


def test_a_dropped_transaction_is_broadcast_again(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
) -> None:
    submit_mints(sessions, chain.registry, issuer_account.address, ["dropped"], owner=owner)
    sender = make_sender(engine, anvil.url, issuer_account)
    with automine_off(chain.w3):
        sender.send_once()
        (request,) = requests_of(sessions)
        tx_hash = request.attempts[0].tx_hash
        assert rpc(chain.w3, "anvil_dropTransaction", tx_hash) == tx_hash
        assert rpc(chain.w3, "eth_getTransactionByHash", tx_hash) is None
        report = sender.send_once()
        assert report.broadcast == 1
        assert rpc(chain.w3, "eth_getTransactionByHash", tx_hash) is not None
        rpc(chain.w3, "evm_mine")
    drive(sender, lambda: all_final(sessions))
    (request,) = requests_of(sessions)
    assert request.state is RequestState.CONFIRMED and request.tx_hash == tx_hash
    assert len(request.attempts) == 1
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


def _raise_next_base_fee(chain: Chain, above_wei: int) -> None:
    """The next block's base fee far above `above_wei`; mine it (our tx cannot be in it)."""
    rpc(chain.w3, "anvil_setNextBlockBaseFeePerGas", hex(above_wei * 4))
    rpc(chain.w3, "evm_mine")


def test_a_transaction_stuck_under_a_raised_base_fee_is_replaced_at_plus_12_5_percent(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
) -> None:
    clock = Clock()
    submit_mints(sessions, chain.registry, issuer_account.address, ["stuck"], owner=owner)
    sender = make_sender(engine, anvil.url, issuer_account, clock=clock)
    deadline_s = sender.config.fee_policy.fast.deadline_s
    with automine_off(chain.w3):
        sender.send_once()
        (request,) = requests_of(sessions)
        first = request.attempts[0]
        old = fees_of(first)
        assert isinstance(old, Eip1559Fees)
        _raise_next_base_fee(chain, old.max_fee_per_gas_wei)
        assert rpc(chain.w3, "eth_getTransactionReceipt", first.tx_hash) is None

        clock.advance(deadline_s - 1)
        assert sender.send_once().replaced == 0  # not yet due
        clock.advance(1)
        assert sender.send_once().replaced == 1  # at the deadline

        (request,) = requests_of(sessions)
        assert len(request.attempts) == 2
        second = request.attempts[1]
        new = fees_of(second)
        assert isinstance(new, Eip1559Fees)
        assert second.nonce == first.nonce and second.gas_limit == first.gas_limit
        assert new.max_fee_per_gas_wei >= math.ceil(old.max_fee_per_gas_wei * 1.125)
        assert new.max_priority_fee_per_gas_wei >= math.ceil(
            old.max_priority_fee_per_gas_wei * 1.125
        )
        rpc(chain.w3, "evm_mine")
    drive(sender, lambda: all_final(sessions))
    (request,) = requests_of(sessions)
    assert request.state is RequestState.CONFIRMED and request.tx_hash == second.tx_hash
    assert rpc(chain.w3, "eth_getTransactionReceipt", first.tx_hash) is None
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


def test_a_first_attempt_refused_under_the_base_fee_is_replaced_after_its_deadline(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
) -> None:
    """The base fee jumps between the quote and the broadcast; the node refuses the attempt
    ("max fee per gas less than block base fee"). Its deadline still runs: it is replaced,
    not re-broadcast unchanged for ever."""
    clock = Clock()
    armed = [True]

    def raise_base_fee(point: str) -> None:
        if point == AFTER_COMMIT_BEFORE_BROADCAST and armed:
            armed.clear()
            (signed,) = requests_of(sessions)
            fees = fees_of(signed.attempts[0])
            assert isinstance(fees, Eip1559Fees)
            _raise_next_base_fee(chain, fees.max_fee_per_gas_wei)

    submit_mints(sessions, chain.registry, issuer_account.address, ["refused"], owner=owner)
    sender = make_sender(engine, anvil.url, issuer_account, clock=clock, fault=raise_base_fee)
    with automine_off(chain.w3):
        sender.send_once()
        (request,) = requests_of(sessions)
        first = request.attempts[0]
        assert rpc(chain.w3, "eth_getTransactionByHash", first.tx_hash) is None  # refused
        assert request.state is RequestState.SENT and first.sent_at is not None
        clock.advance(sender.config.fee_policy.fast.deadline_s)
        assert sender.send_once().replaced == 1
        (request,) = requests_of(sessions)
        second = request.attempts[1]
        assert second.nonce == first.nonce
        assert rpc(chain.w3, "eth_getTransactionByHash", second.tx_hash) is not None
        rpc(chain.w3, "evm_mine")
    drive(sender, lambda: all_final(sessions))
    (request,) = requests_of(sessions)
    assert request.state is RequestState.CONFIRMED and request.tx_hash == second.tx_hash
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


def test_the_fee_cap_is_never_exceeded_and_reaching_it_raises_an_alert(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    submit_mints(sessions, chain.registry, issuer_account.address, ["capped"], owner=owner)
    next_base_fee = int(
        rpc(chain.w3, "eth_feeHistory", "0x1", "latest", [])["baseFeePerGas"][-1], 16
    )
    # Room for a first attempt (capped below what the fast tier asks), none for +12.5 %.
    cap = Wei(next_base_fee * 105 // 100 + 10**9)
    sender = make_sender(
        engine, anvil.url, issuer_account, clock=clock, policy=FeePolicy(fee_cap_wei=cap)
    )
    deadline_s = sender.config.fee_policy.fast.deadline_s
    with automine_off(chain.w3), caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        sender.send_once()
        old = fees_of(requests_of(sessions)[0].attempts[0])
        assert isinstance(old, Eip1559Fees)
        _raise_next_base_fee(chain, old.max_fee_per_gas_wei)
        for _ in range(3):
            clock.advance(deadline_s)
            sender.send_once()
            rpc(chain.w3, "anvil_setNextBlockBaseFeePerGas", hex(cap * 4))
            rpc(chain.w3, "evm_mine")
    (request,) = requests_of(sessions)
    assert request.state is RequestState.SENT
    assert len(request.attempts) == 1  # +12.5 % would cross the cap: no replacement
    for attempt in request.attempts:
        fees = fees_of(attempt)
        assert isinstance(fees, Eip1559Fees)
        assert fees.max_fee_per_gas_wei <= cap
        assert fees.max_priority_fee_per_gas_wei <= cap
    alerts = [json.loads(r.getMessage()) for r in caplog.records if "alert" in r.getMessage()]
    capped = [a for a in alerts if a["alert"] == "fee_cap_reached"]
    assert any("capped" in a for a in capped)  # the first attempt was lowered to the cap
    assert any(a.get("idempotency_key") == "capped" and "wanted" in a for a in capped)
    assert all(a["fee_cap_wei"] == cap for a in capped)
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


@pytest.mark.parametrize("method", ["anvil_reorg", "anvil_rollback"])
def test_a_reorg_removing_a_mined_transaction_sends_it_back_and_again(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
    method: str,
) -> None:
    submit_mints(sessions, chain.registry, issuer_account.address, ["reorged"], owner=owner)
    sender = make_sender(engine, anvil.url, issuer_account, confirmations=3)
    drive(sender, lambda: states(sessions)["reorged"] is RequestState.MINED)
    (mined,) = requests_of(sessions)
    assert mined.block_number == chain.w3.eth.block_number  # depth 1

    rpc(chain.w3, method, *([1, []] if method == "anvil_reorg" else [1]))
    assert rpc(chain.w3, "eth_getTransactionReceipt", mined.tx_hash) is None
    with automine_off(chain.w3):
        sender.send_once()  # receipt gone: back to sent, the stored attempt re-broadcast
        (back,) = requests_of(sessions)
        assert back.state is RequestState.SENT
        assert back.block_number is None and back.attempts[0].mined_block is None
        assert rpc(chain.w3, "eth_getTransactionByHash", mined.tx_hash) is not None
        rpc(chain.w3, "anvil_mine", "0x3")
    drive(sender, lambda: all_final(sessions))
    (confirmed,) = requests_of(sessions)
    assert confirmed.state is RequestState.CONFIRMED
    assert confirmed.tx_hash == mined.tx_hash and len(confirmed.attempts) == 1
    assert confirmed.block_hash != mined.block_hash
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)
