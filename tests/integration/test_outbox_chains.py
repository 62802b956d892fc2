"""The outbox on anvils of its own: an RPC that goes down and comes back with its state, and
a legacy (pre-London) chain that takes gasPrice transactions."""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.anvil import Anvil, free_port
from granular.adapters.chain.client import connect
from granular.adapters.db.outbox import RequestState
from granular.domain.gas import LegacyFees
from granular.services.deployment import deploy
from granular.services.outbox import LOGGER_NAME, fees_of
from tests.integration.outbox_helpers import (
    Clock,
    _close_senders,  # noqa: F401  (autouse fixture)
    all_final,
    assert_chain_agrees,
    automine_off,
    drive,
    make_sender,
    registry_at,
    requests_of,
    rpc,
    states,
    submit_mints,
    wait_for,
)


def test_rpc_down_for_a_while_backs_off_marks_nothing_failed_and_resumes(
    engine: Engine,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    issuer_account: LocalAccount,
    owner: str,
) -> None:
    node = Anvil(args=("--state", str(tmp_path / "state.json")), log=tmp_path / "anvil.log")
    node.start()
    try:
        record = deploy(rpc_url=node.url, network="down", directory=tmp_path)
        w3, _ = connect(node.url)
        registry = registry_at(w3, record["address"])
        signer = issuer_account.address
        sender = make_sender(engine, node.url, issuer_account)

        submit_mints(sessions, registry, signer, ["up-1", "up-2"], owner=owner)
        drive(sender, lambda: all_final(sessions))
        # Automine stays off until the node goes down: turning it back on first would mine
        # the flight transactions in a race with the stop, and anvil's --state dump keeps
        # their nonces but not their receipts, which looks like a foreign transaction.
        rpc(w3, "evm_setAutomine", False)
        submit_mints(sessions, registry, signer, ["flight-1", "flight-2"], owner=owner)
        sender.send_once()  # in the node's pool, not mined, when it goes down
        node.stop()  # the restarted node mines again (automine is on by default)
        submit_mints(sessions, registry, signer, ["down-1", "down-2"], owner=owner)

        stop = threading.Event()
        loop = threading.Thread(target=sender.run, args=(stop,))
        loop.start()
        try:
            wait_for(lambda: sender.stats.consecutive_failures >= 4)
            assert states(sessions) == {
                "up-1": RequestState.CONFIRMED,
                "up-2": RequestState.CONFIRMED,
                "flight-1": RequestState.SENT,
                "flight-2": RequestState.SENT,
                "down-1": RequestState.QUEUED,
                "down-2": RequestState.QUEUED,
            }
            node.start()  # same port, same chain state
            wait_for(lambda: all_final(sessions))
        finally:
            stop.set()
            loop.join()
        assert set(states(sessions).values()) == {RequestState.CONFIRMED}
        assert all(len(r.attempts) == 1 for r in requests_of(sessions))
        assert_chain_agrees(w3, registry, sessions, signer=signer)
    finally:
        node.stop()


def test_an_unreachable_rpc_backs_off_doubling_and_never_logs_the_url_secret(
    engine: Engine,
    sessions: sessionmaker[Session],
    issuer_account: LocalAccount,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RPC URLs carry API keys in the path or the query: the alerts name the host only."""
    secret = "s3cr3t-api-key"
    url = f"http://user:{secret}@127.0.0.1:{free_port()}/v3/{secret}?apikey={secret}"
    sender = make_sender(engine, url, issuer_account)
    stop = threading.Event()
    loop = threading.Thread(target=sender.run, args=(stop,))
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        loop.start()
        try:
            wait_for(lambda: sender.stats.consecutive_failures >= 5)
        finally:
            stop.set()
            loop.join()
    assert all(secret not in r.getMessage() for r in caplog.records)
    alerts = [json.loads(r.getMessage()) for r in caplog.records]
    waits = [a["retry_in_s"] for a in alerts if a["alert"] == "rpc_unavailable"]
    assert waits[:5] == [0.02, 0.04, 0.08, 0.1, 0.1]  # doubling, up to backoff_max_s
    assert "127.0.0.1" in alerts[0]["reason"]


def test_a_legacy_chain_gets_gas_price_transactions_and_replacements(
    engine: Engine,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    issuer_account: LocalAccount,
    owner: str,
) -> None:
    with Anvil(args=("--hardfork", "berlin"), log=tmp_path / "anvil.log") as node:
        w3, _ = connect(node.url)
        assert "baseFeePerGas" not in w3.eth.get_block("latest")
        record = deploy(rpc_url=node.url, network="berlin", directory=tmp_path)
        registry = registry_at(w3, record["address"])
        deployment_tx = w3.eth.get_transaction(record["transactionHash"])
        assert deployment_tx["type"] == 0 and "maxFeePerGas" not in deployment_tx
        signer = issuer_account.address
        clock = Clock()
        sender = make_sender(engine, node.url, issuer_account, clock=clock)

        submit_mints(sessions, registry, signer, ["legacy-1"], owner=owner)
        drive(sender, lambda: all_final(sessions))
        with automine_off(w3):
            submit_mints(sessions, registry, signer, ["legacy-2"], owner=owner)
            sender.send_once()
            clock.advance(sender.config.fee_policy.fast.deadline_s)
            assert sender.send_once().replaced == 1
            rpc(w3, "evm_mine")
        drive(sender, lambda: all_final(sessions))

        by_key = {r.idempotency_key: r for r in requests_of(sessions)}
        assert {r.state for r in by_key.values()} == {RequestState.CONFIRMED}
        for request in by_key.values():
            for attempt in request.attempts:
                assert attempt.fee_kind == "legacy" and attempt.max_fee_per_gas_wei is None
            mined = next(a for a in request.attempts if a.tx_hash == request.tx_hash)
            tx = w3.eth.get_transaction(mined.tx_hash)  # type: ignore[arg-type]
            assert tx["type"] == 0
            assert tx["gasPrice"] == mined.gas_price_wei
        first, second = (fees_of(a) for a in by_key["legacy-2"].attempts)
        assert isinstance(first, LegacyFees) and isinstance(second, LegacyFees)
        assert second.gas_price_wei >= math.ceil(first.gas_price_wei * 1.125)
        assert by_key["legacy-2"].tx_hash == by_key["legacy-2"].attempts[1].tx_hash
        assert_chain_agrees(w3, registry, sessions, signer=signer)
