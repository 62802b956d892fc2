"""The outbox against a real anvil, on SQLite and PostgreSQL: the happy path, reverts,
idempotency, confirmations, a foreign transaction on our nonce, and the JSON logs."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.anvil import Anvil
from granular.adapters.db import outbox as db
from granular.adapters.db.outbox import RequestState
from granular.domain.addresses import InvalidAddress
from granular.services import outbox as service
from granular.services.outbox import LOGGER_NAME, NonceTakenByForeignTransaction
from tests.integration.chain import Chain
from tests.integration.outbox_helpers import (  # _close_senders: an autouse fixture
    CHAIN_ID,
    Clock,
    _close_senders,  # noqa: F401
    all_final,
    assert_chain_agrees,
    automine_off,
    batch_id,
    drive,
    issue_calldata,
    make_sender,
    requests_of,
    rpc,
    states,
    submit_mints,
)


def test_requests_are_confirmed_once_each_with_gapless_nonces(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
) -> None:
    keys = [f"happy-{i}" for i in range(5)]
    submit_mints(sessions, chain.registry, issuer_account.address, keys, owner=owner, items=2)
    first_nonce = chain.w3.eth.get_transaction_count(issuer_account.address)
    sender = make_sender(engine, anvil.url, issuer_account, batch_size=3)

    reports = drive(sender, lambda: all_final(sessions))

    assert set(states(sessions).values()) == {RequestState.CONFIRMED}
    finished = [o for r in reports for o in r.finished]
    assert sorted(o.idempotency_key for o in finished) == sorted(keys)
    assert all(o.tx_hash for o in finished)
    nonces = sorted(r.nonce for r in requests_of(sessions) if r.nonce is not None)
    assert nonces == list(range(first_nonce, first_nonce + 5))
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)
    with sessions() as session:
        outcome = service.outcome(session=session, chain_id=CHAIN_ID, idempotency_key=keys[0])
    assert outcome is not None and outcome.final and outcome.attempts == 1
    assert outcome.tx_hash == next(o.tx_hash for o in finished if o.idempotency_key == keys[0])


def test_nonces_start_at_the_larger_of_the_stored_next_nonce_and_the_chain(
    sessions: sessionmaker[Session], issuer: str
) -> None:
    now = datetime.now(UTC)

    def allocate(chain_pending: int, count: int) -> int:
        with sessions.begin() as session:
            return db.allocate_nonces(
                session=session,
                chain_id=CHAIN_ID,
                signer=issuer,
                chain_pending=chain_pending,
                count=count,
                now=now,
            )

    assert allocate(chain_pending=5, count=3) == 5  # no row yet: the chain's count
    assert allocate(chain_pending=6, count=2) == 8  # the chain lags (unsent, dropped): ours
    assert allocate(chain_pending=20, count=1) == 20  # signed elsewhere: skipped, not reused
    with sessions() as session:
        assert db.stored_next_nonce(session=session, chain_id=CHAIN_ID, signer=issuer) == 21


def test_a_nonce_used_outside_the_outbox_is_skipped_with_an_alert(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = make_sender(engine, anvil.url, issuer_account)
    submit_mints(sessions, chain.registry, issuer_account.address, ["before"], owner=owner)
    drive(sender, lambda: all_final(sessions))
    chain.w3.eth.send_transaction({"from": issuer_account.address, "to": owner, "value": 1})
    submit_mints(sessions, chain.registry, issuer_account.address, ["after"], owner=owner)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        drive(sender, lambda: all_final(sessions))
    by_key = {r.idempotency_key: r for r in requests_of(sessions)}
    assert by_key["after"].state is RequestState.CONFIRMED
    assert by_key["before"].nonce is not None
    assert by_key["after"].nonce == by_key["before"].nonce + 2
    alerts = [json.loads(r.getMessage()).get("alert") for r in caplog.records]
    assert "nonce_skipped" in alerts
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


def test_a_full_batch_whose_gas_cannot_be_estimated_stays_queued_without_spinning(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A batch that needs more gas than a block holds: not a revert, so it is kept queued,
    alerted and backs off; with nothing behind it, `run` waits its poll interval."""
    submit_mints(
        sessions, chain.registry, issuer_account.address, ["huge"], owner=owner, items=1_500
    )
    sender = make_sender(engine, anvil.url, issuer_account, batch_size=1)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        report = sender.send_once()
    assert report.signed == 0 and not report.more_work
    assert states(sessions) == {"huge": RequestState.QUEUED}
    alerts = [json.loads(r.getMessage()) for r in caplog.records]
    assert [(a["alert"], a["idempotency_key"]) for a in alerts] == [("gas_estimate_failed", "huge")]
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


def _estimate_alerts(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int]]:
    """(key, failures so far) of each gas_estimate_failed alert, then forgets the records."""
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    caplog.clear()
    return [
        (line["idempotency_key"], line["estimate_failures"])
        for line in lines
        if line.get("alert") == "gas_estimate_failed"
    ]


def test_requests_whose_gas_cannot_be_estimated_back_off_and_let_the_next_ones_through(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full batch at the head of the queue whose estimates fail without a revert (more
    gas than a block holds) waits out a doubling backoff on the sender's clock; the request
    behind it is signed the next round with the next nonce."""
    clock = Clock(now_s=float(int(time.time())))  # whole seconds: exact backoff edges
    start = datetime.fromtimestamp(clock.now_s, UTC)
    bad = ["huge-1", "huge-2"]
    submit_mints(sessions, chain.registry, issuer_account.address, bad, owner=owner, items=1_500)
    submit_mints(sessions, chain.registry, issuer_account.address, ["good"], owner=owner)
    next_nonce = chain.w3.eth.get_transaction_count(issuer_account.address, "pending")
    sender = make_sender(
        engine,
        anvil.url,
        issuer_account,
        clock=clock,
        batch_size=2,
        backoff_initial_s=1.0,
        backoff_max_s=4.0,
    )

    def waiting() -> dict[str, tuple[RequestState, int | None, int, datetime | None]]:
        return {
            r.idempotency_key: (r.state, r.nonce, r.estimate_failures, r.retry_after)
            for r in requests_of(sessions)
            if r.idempotency_key in bad
        }

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        first = sender.send_once()
        assert first.signed == 0 and first.more_work  # "good" is left behind the batch
        assert _estimate_alerts(caplog) == [("huge-1", 1), ("huge-2", 1)]
        backing_off = (RequestState.QUEUED, None, 1, start + timedelta(seconds=1))
        assert waiting() == {key: backing_off for key in bad}

        assert sender.send_once().signed == 1  # the next round, clock unmoved
        drive(sender, lambda: states(sessions)["good"] is RequestState.CONFIRMED)
        assert _estimate_alerts(caplog) == []  # the bad ones were not tried meanwhile
        assert waiting() == {key: backing_off for key in bad}

        clock.advance(0.5)
        assert sender.send_once().signed == 0
        assert _estimate_alerts(caplog) == []  # half-way through the backoff
        clock.advance(0.5)
        report = sender.send_once()
        assert report.signed == 0 and not report.more_work
        assert _estimate_alerts(caplog) == [("huge-1", 2), ("huge-2", 2)]  # exactly at its end
        doubled = (RequestState.QUEUED, None, 2, start + timedelta(seconds=1 + 2))
        assert waiting() == {key: doubled for key in bad}

    good = {r.idempotency_key: r for r in requests_of(sessions)}["good"]
    assert good.nonce == next_nonce  # the bad ones took no nonce
    assert good.estimate_failures == 0 and good.retry_after is None
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


def test_a_request_estimated_after_its_backoff_is_signed_and_the_backoff_cleared(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
) -> None:
    """The node's block gas limit is below what the mint needs for one round (the estimate
    fails without a revert), then back: the request is signed once its backoff has passed."""
    clock = Clock(now_s=float(int(time.time())))
    submit_mints(sessions, chain.registry, issuer_account.address, ["late"], owner=owner)
    sender = make_sender(
        engine, anvil.url, issuer_account, clock=clock, backoff_initial_s=1.0, backoff_max_s=4.0
    )
    block_gas_limit = chain.w3.eth.get_block("latest")["gasLimit"]
    rpc(chain.w3, "evm_setBlockGasLimit", hex(60_000))
    try:
        assert sender.send_once().signed == 0
    finally:
        rpc(chain.w3, "evm_setBlockGasLimit", hex(block_gas_limit))
    (late,) = requests_of(sessions)
    assert late.state is RequestState.QUEUED and late.estimate_failures == 1
    assert late.retry_after == datetime.fromtimestamp(clock.now_s + 1, UTC)
    with sessions() as session:
        outcome = service.outcome(session=session, chain_id=CHAIN_ID, idempotency_key="late")
    assert outcome is not None and outcome.retry_after == late.retry_after

    assert sender.send_once().signed == 0  # estimable again, but still backing off
    clock.advance(1)
    drive(sender, lambda: all_final(sessions))
    (late,) = requests_of(sessions)
    assert late.state is RequestState.CONFIRMED
    assert late.estimate_failures == 0 and late.retry_after is None
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


def test_submit_is_idempotent_on_the_key_and_refuses_another_payload(
    sessions: sessionmaker[Session], chain: Chain, issuer: str, owner: str
) -> None:
    first = submit_mints(sessions, chain.registry, issuer, ["same"], owner=owner)
    again = submit_mints(sessions, chain.registry, issuer, ["same"], owner=owner)
    assert first == again
    assert len(requests_of(sessions)) == 1
    with sessions.begin() as session, pytest.raises(service.IdempotencyConflict) as raised:
        service.submit(
            session=session,
            chain_id=CHAIN_ID,
            signer=issuer,
            idempotency_key="same",
            to=chain.registry.address,
            data=issue_calldata(chain.registry, "other", owner),
        )
    assert raised.value.code == "idempotency_conflict"
    with sessions.begin() as session, pytest.raises(service.InvalidRequest) as invalid:
        service.submit(
            session=session,
            chain_id=CHAIN_ID,
            signer=issuer,
            idempotency_key="urgent",
            to=chain.registry.address,
            data=issue_calldata(chain.registry, "urgent", owner),
            tier="urgent",  # type: ignore[arg-type]
        )
    assert invalid.value.field == "tier"


@pytest.mark.parametrize("field", ["signer", "to"])
def test_submit_refuses_an_address_with_a_wrong_checksum_instead_of_repairing_it(
    sessions: sessionmaker[Session], issuer: str, field: str
) -> None:
    good = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    arguments = {"signer": issuer, "to": good, field: good[:-1] + "D"}
    with sessions.begin() as session, pytest.raises(InvalidAddress) as raised:
        service.submit(
            session=session, chain_id=CHAIN_ID, idempotency_key="typo", data=b"\x01", **arguments
        )
    assert raised.value.details["field"] == field
    assert requests_of(sessions) == []
    with sessions.begin() as session:
        lower = {"signer": issuer, "to": good.lower()}
        submitted = service.submit(
            session=session, chain_id=CHAIN_ID, idempotency_key="lower", data=b"\x01", **lower
        )
    (stored,) = requests_of(sessions)
    assert submitted.created and stored.to_address == good  # one spelling in the database


def test_a_request_is_confirmed_only_at_depth_k(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
) -> None:
    submit_mints(sessions, chain.registry, issuer_account.address, ["deep"], owner=owner)
    sender = make_sender(engine, anvil.url, issuer_account, confirmations=3)
    drive(sender, lambda: states(sessions)["deep"] is RequestState.MINED)
    rpc(chain.w3, "anvil_mine", "0x1")
    sender.send_once()
    assert states(sessions)["deep"] is RequestState.MINED  # depth 2 of 3
    rpc(chain.w3, "anvil_mine", "0x1")
    sender.send_once()
    assert states(sessions)["deep"] is RequestState.CONFIRMED  # depth 3
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


def test_a_revert_on_chain_stores_the_decoded_custom_error(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
) -> None:
    """Two keys carrying the same batch id: the second mint reverts with
    CertificateRegistryBatchAlreadyIssued, decoded and stored on its request."""
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
    sender = make_sender(engine, anvil.url, issuer_account)
    with automine_off(chain.w3):
        sender.send_once()  # both estimated against the same state, both signed and sent
        rpc(chain.w3, "evm_mine")
    drive(sender, lambda: all_final(sessions))

    by_key = {r.idempotency_key: r for r in requests_of(sessions)}
    assert by_key["dup-a"].state is RequestState.CONFIRMED
    reverted = by_key["dup-b"]
    assert reverted.state is RequestState.REVERTED
    assert reverted.error_code == "CertificateRegistryBatchAlreadyIssued"
    assert (reverted.error_detail or "").startswith("CertificateRegistryBatchAlreadyIssued(")
    assert chain.registry.functions.isBatchIssued(batch_id("dup")).call()
    assert chain.registry.functions.nextId().call() == 2
    # (assert_chain_agrees reads the batch id from the key; here two keys share one.)
    for request, status in ((by_key["dup-a"], 1), (reverted, 0)):
        receipt = chain.w3.eth.get_transaction_receipt(request.tx_hash)  # type: ignore[arg-type]
        assert receipt["status"] == status and receipt["blockNumber"] == request.block_number


def test_a_call_that_reverts_when_estimated_fails_without_using_a_nonce(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
) -> None:
    submit_mints(sessions, chain.registry, issuer_account.address, ["once"], owner=owner)
    sender = make_sender(engine, anvil.url, issuer_account)
    drive(sender, lambda: all_final(sessions))
    nonce_after_first = chain.w3.eth.get_transaction_count(issuer_account.address)
    with sessions.begin() as session:
        service.submit(
            session=session,
            chain_id=CHAIN_ID,
            signer=issuer_account.address,
            idempotency_key="once-again",
            to=chain.registry.address,
            data=issue_calldata(chain.registry, "once", owner),
        )
    report = sender.send_once()
    failed = {r.idempotency_key: r for r in requests_of(sessions)}["once-again"]
    assert failed.state is RequestState.FAILED
    assert failed.error_code == "CertificateRegistryBatchAlreadyIssued"
    assert failed.nonce is None and failed.attempts == ()
    assert [o.idempotency_key for o in report.finished] == ["once-again"]
    assert chain.w3.eth.get_transaction_count(issuer_account.address) == nonce_after_first
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


def test_a_foreign_transaction_on_our_nonce_stops_the_sender(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    submit_mints(sessions, chain.registry, issuer_account.address, ["stolen"], owner=owner)
    sender = make_sender(engine, anvil.url, issuer_account)
    with automine_off(chain.w3):
        sender.send_once()
        ours = requests_of(sessions)[0]
        assert ours.state is RequestState.SENT and ours.nonce is not None
        # Someone else signs with the same key and nonce; the node keeps theirs.
        rpc(chain.w3, "anvil_dropTransaction", ours.attempts[0].tx_hash)
        chain.w3.eth.send_transaction(
            {"from": issuer_account.address, "to": owner, "value": 1, "nonce": ours.nonce}
        )
        rpc(chain.w3, "evm_mine")
    with (
        caplog.at_level(logging.INFO, logger=LOGGER_NAME),
        pytest.raises(NonceTakenByForeignTransaction) as raised,
    ):
        sender.send_once()
    assert raised.value.nonce == ours.nonce
    assert raised.value.code == "nonce_taken_by_foreign_transaction"
    alerts = [json.loads(r.getMessage()) for r in caplog.records]
    assert any(a.get("alert") == "nonce_taken_by_foreign_transaction" for a in alerts)
    # It stops again on a restart instead of signing anything else.
    sender.close()
    with pytest.raises(NonceTakenByForeignTransaction):
        make_sender(engine, anvil.url, issuer_account).send_once()
    assert states(sessions)["stolen"] is RequestState.SENT
    assert not chain.registry.functions.isBatchIssued(batch_id("stolen")).call()
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


def test_every_state_change_writes_one_json_line_without_secrets(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    submit_mints(sessions, chain.registry, issuer_account.address, ["logged"], owner=owner)
    sender = make_sender(engine, anvil.url, issuer_account)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        drive(sender, lambda: all_final(sessions))
    lines: list[dict[str, Any]] = [json.loads(r.getMessage()) for r in caplog.records]
    events = [line["event"] for line in lines]
    assert events == ["signed", "sent", "confirmed"]
    for line in lines:
        for field in ("request_id", "idempotency_key", "nonce", "tier", "tx_hash", "state"):
            assert line[field] is not None, (field, line)
        assert "max_fee_per_gas_wei" in line and "block" in line
    assert lines[-1]["block"] is not None
    key_hex = issuer_account.key.hex()
    assert all(key_hex not in r.getMessage() for r in caplog.records)
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)


def test_a_racing_submit_of_the_same_key_returns_the_first_request(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """The second transaction reads no request, then its insert waits on the first one's
    unique key; once that commits it gets the stored request, not an integrity error."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: the second insert cannot race the first")
    import threading
    import time

    arguments = {
        "chain_id": CHAIN_ID,
        "signer": "0x" + "11" * 20,
        "idempotency_key": "race",
        "to": "0x" + "22" * 20,
        "data": b"\x01\x02",
    }
    inserted = threading.Event()
    first: list[service.Submitted] = []

    def submit_then_commit_late() -> None:
        with sessions.begin() as session:
            first.append(service.submit(session=session, **arguments))  # type: ignore[arg-type]
            inserted.set()
            time.sleep(0.3)

    thread = threading.Thread(target=submit_then_commit_late)
    thread.start()
    assert inserted.wait(10)
    with sessions.begin() as session:
        second = service.submit(session=session, **arguments)  # type: ignore[arg-type]
    thread.join(10)
    assert first[0].created and not second.created
    assert second.request_id == first[0].request_id
    assert len(requests_of(sessions)) == 1
