"""The outbox review's open items, each a fault on a real anvil, on SQLite and PostgreSQL:
a refused replacement whose previous attempt left the pool, a revert read during an RPC
fault, and a lease lost between the start of a round and a signing."""

from __future__ import annotations

import json
import logging

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.anvil import Anvil
from granular.adapters.db.lease import RowLease
from granular.adapters.db.outbox import RequestState
from granular.domain.gas import Eip1559Fees
from granular.services import outbox as service
from tests.integration.chain import Chain
from tests.integration.outbox_helpers import (
    CHAIN_ID,
    Clock,
    FaultyRpc,
    _close_senders,  # noqa: F401  (autouse fixture)
    all_final,
    assert_chain_agrees,
    automine_off,
    drive,
    issue_calldata,
    make_sender,
    requests_of,
    rpc,
    states,
    submit_mints,
)


def _alerts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        line["alert"]
        for line in (json.loads(r.getMessage()) for r in caplog.records)
        if line.get("event") == "alert"
    ]


def test_a_refused_replacement_whose_previous_attempt_left_the_pool_sends_that_one_again(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The key can pay for the first attempt but not for +12.5 %: the node refuses the
    replacement ("insufficient funds"), then loses the first attempt. The first attempt is
    broadcast again, so the request does not sit with nothing in any pool."""
    clock = Clock()
    signer = issuer_account.address
    submit_mints(sessions, chain.registry, signer, ["poor"], owner=owner)
    sender = make_sender(engine, anvil.url, issuer_account, clock=clock)
    balance = chain.w3.eth.get_balance(signer)
    with automine_off(chain.w3), caplog.at_level(logging.INFO, logger=service.LOGGER_NAME):
        try:
            sender.send_once()
            (request,) = requests_of(sessions)
            first = request.attempts[0]
            fees = service.fees_of(first)
            assert isinstance(fees, Eip1559Fees)
            enough_for_one = first.gas_limit * fees.max_fee_per_gas_wei * 106 // 100
            rpc(chain.w3, "anvil_setBalance", signer, hex(enough_for_one))

            clock.advance(sender.config.fee_policy.fast.deadline_s)
            assert sender.send_once().replaced == 1
            (request,) = requests_of(sessions)
            replacement = request.attempts[1]
            assert replacement.sent_at is None  # refused: insufficient funds
            assert "broadcast_rejected" in _alerts(caplog)
            assert rpc(chain.w3, "anvil_dropTransaction", first.tx_hash) == first.tx_hash

            sender.send_once()
            assert rpc(chain.w3, "eth_getTransactionByHash", first.tx_hash) is not None
            assert rpc(chain.w3, "eth_getTransactionByHash", replacement.tx_hash) is None
            rpc(chain.w3, "evm_mine")
        finally:
            rpc(chain.w3, "anvil_setBalance", signer, hex(balance))
    drive(sender, lambda: all_final(sessions))
    (request,) = requests_of(sessions)
    assert request.state is RequestState.CONFIRMED and request.tx_hash == first.tx_hash
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=signer)


def test_a_revert_whose_reason_cannot_be_read_during_an_rpc_fault_is_not_stored_as_final(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The second of two mints of one batch reverts on chain. While the node cannot replay
    the call ("header not found"), the request stays mined; once it can, the decoded error
    is stored."""
    data = issue_calldata(chain.registry, "dup", owner)
    with sessions.begin() as session:
        for key in ("dup-a", "dup-b"):
            service.submit(
                session=session,
                chain_id=CHAIN_ID,
                signer=issuer_account.address,
                idempotency_key=key,
                to=chain.registry.address,
                data=data,
                items=1,
            )
    with FaultyRpc(anvil.url) as proxy:
        sender = make_sender(engine, proxy.url, issuer_account)
        with automine_off(chain.w3):
            sender.send_once()  # both estimated against the same state, both sent
            rpc(chain.w3, "evm_mine")
        proxy.failing.add("eth_call")
        with caplog.at_level(logging.INFO, logger=service.LOGGER_NAME):
            drive(sender, lambda: states(sessions)["dup-a"] is RequestState.CONFIRMED)
            for _ in range(3):
                sender.send_once()
        assert "eth_call" in proxy.failed
        assert states(sessions)["dup-b"] is RequestState.MINED
        (stuck,) = [r for r in requests_of(sessions) if r.idempotency_key == "dup-b"]
        assert stuck.error_code is None and stuck.error_detail is None
        assert "revert_reason_unavailable" in _alerts(caplog)

        proxy.failing.clear()
        reports = drive(sender, lambda: all_final(sessions))
    by_key = {r.idempotency_key: r for r in requests_of(sessions)}
    reverted = by_key["dup-b"]
    assert reverted.state is RequestState.REVERTED
    assert reverted.error_code == "CertificateRegistryBatchAlreadyIssued"
    (outcome,) = [o for r in reports for o in r.finished]
    assert outcome.idempotency_key == "dup-b" and outcome.error_code == reverted.error_code


class _StolenAfterAcquire:
    """A lease row that another sender takes over right after this one acquired it at the
    start of a round (this one's row expired meanwhile), when `armed`."""

    def __init__(self, engine: Engine, clock: Clock, name: str, ttl_s: float) -> None:
        self.name = name
        self.armed = False
        self._clock = clock
        self._ttl_s = ttl_s
        self._mine = RowLease(engine, name, ttl_s=ttl_s, clock=clock)
        self.thief = RowLease(engine, name, ttl_s=ttl_s, clock=clock)

    def acquire(self) -> bool:
        held = self._mine.acquire()
        if held and self.armed:
            self.armed = False
            self._clock.advance(self._ttl_s + 1)
            assert self.thief.acquire()
        return held

    def release(self) -> None:
        self._mine.release()
        self.thief.release()


@pytest.mark.parametrize("signing", ["first attempt", "replacement"])
def test_the_lease_is_checked_again_right_before_signing(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
    caplog: pytest.LogCaptureFixture,
    signing: str,
) -> None:
    """Another sender takes the lease after this one's round began: nothing is signed."""
    clock = Clock()
    signer = issuer_account.address
    ttl_s = 60.0  # longer than the fast tier's deadline: a stolen round is also a due one
    lease = _StolenAfterAcquire(engine, clock, f"outbox:{CHAIN_ID}:{signer}", ttl_s)
    sender = service.OutboxSender(
        engine=engine,
        rpc_url=anvil.url,
        account=issuer_account,
        config=service.OutboxConfig(chain_id=CHAIN_ID, lease_ttl_s=ttl_s),
        clock=clock,
        lease=lease,
    )
    submit_mints(sessions, chain.registry, signer, ["leased"], owner=owner)
    try:
        with automine_off(chain.w3), caplog.at_level(logging.INFO, logger=service.LOGGER_NAME):
            if signing == "replacement":
                assert sender.send_once().signed == 1
            lease.armed = True
            report = sender.send_once()
            assert not report.leased and report.signed == 0 and report.replaced == 0
            assert "lease_lost" in _alerts(caplog)
            (request,) = requests_of(sessions)
            expected = 0 if signing == "first attempt" else 1
            assert len(request.attempts) == expected
            assert request.state is (
                RequestState.QUEUED if signing == "first attempt" else RequestState.SENT
            )
            # (Before automine is back on: that would mine the first attempt at once.)
            assert_chain_agrees(chain.w3, chain.registry, sessions, signer=signer)
    finally:
        sender.close()
