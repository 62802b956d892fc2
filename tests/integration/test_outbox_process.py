"""The sender as a process: killed with SIGKILL in the middle of a batch, then restarted;
and the lease, which lets exactly one of two senders on one database send."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.anvil import Anvil
from granular.adapters.db.outbox import RequestState
from granular.paths import project_root
from granular.services.outbox import (
    AFTER_BROADCAST_BEFORE_MARK,
    AFTER_COMMIT_BEFORE_BROADCAST,
)
from tests.integration.chain import Chain
from tests.integration.outbox_helpers import (
    _close_senders,  # noqa: F401  (autouse fixture)
    all_final,
    assert_chain_agrees,
    batch_id,
    drive,
    make_sender,
    mint_count,
    requests_of,
    rpc,
    states,
    submit_mints,
    wait_for,
)


@pytest.mark.parametrize(
    "point",
    [AFTER_COMMIT_BEFORE_BROADCAST, AFTER_BROADCAST_BEFORE_MARK],
    ids=["after the commit, before the broadcast", "after the broadcast, before the mark"],
)
def test_kill_9_in_the_middle_of_a_batch_then_restart_mints_exactly_once_per_key(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
    point: str,
) -> None:
    """The worker signs batches of 3; it is killed inside the second batch, at `point`."""
    keys = [f"k9-{i:02d}" for i in range(9)]
    first, second, rest = keys[:3], keys[3:6], keys[6:]
    submit_mints(sessions, chain.registry, issuer_account.address, keys, owner=owner, items=2)
    mints_before = mint_count(chain.registry)
    url = engine.url.render_as_string(hide_password=False)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.outbox_worker",
            url,
            anvil.url,
            "--batch-size",
            "3",
            "--stop-at",
            point,
            "--stop-at-count",
            "2",
        ],
        cwd=project_root(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        readable, _, _ = select.select([worker.stdout], [], [], 60)
        line = worker.stdout.readline() if readable else ""
        assert line.strip() == f"stopped at {point}", (line, worker.poll())
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    at_kill = {r.idempotency_key: r for r in requests_of(sessions)}
    assert {at_kill[k].state for k in first} <= {RequestState.SENT, RequestState.CONFIRMED}
    assert {at_kill[k].state for k in second} == {RequestState.SIGNED}  # stored, not marked
    in_node = [
        rpc(chain.w3, "eth_getTransactionByHash", at_kill[k].attempts[0].tx_hash) is not None
        for k in second
    ]
    assert in_node == [point == AFTER_BROADCAST_BEFORE_MARK] * len(second)
    assert {at_kill[k].state for k in rest} == {RequestState.QUEUED}

    restarted = make_sender(engine, anvil.url, issuer_account)
    drive(restarted, lambda: all_final(sessions), pause_s=0.02)

    assert set(states(sessions).values()) == {RequestState.CONFIRMED}
    done = {r.idempotency_key: r for r in requests_of(sessions)}
    for key in keys:
        assert chain.registry.functions.isBatchIssued(batch_id(key)).call()
    for key in first + second:  # the stored bytes were sent, never a new signature
        assert [a.tx_hash for a in done[key].attempts] == [a.tx_hash for a in at_kill[key].attempts]
    assert mint_count(chain.registry) - mints_before == 2 * len(keys)
    issued = chain.registry.events.BatchIssued().get_logs(from_block=0)
    assert len(issued) == len(keys)  # one BatchIssued per key, no duplicate
    assert_chain_agrees(
        chain.w3, chain.registry, sessions, signer=issuer_account.address, mints_before=mints_before
    )


def test_of_two_senders_on_one_database_only_the_lease_holder_sends(
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    issuer_account: LocalAccount,
    owner: str,
) -> None:
    """PostgreSQL: an advisory lock; SQLite: a lease row. Both senders run their loops."""
    keys = [f"lease-{i}" for i in range(6)]
    submit_mints(sessions, chain.registry, issuer_account.address, keys, owner=owner)
    first = make_sender(engine, anvil.url, issuer_account)
    second = make_sender(engine, anvil.url, issuer_account)
    assert first.send_once().leased  # the first one takes the lease
    stop = threading.Event()
    threads = [threading.Thread(target=s.run, args=(stop,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all_final(sessions))
        # Read while both still run (once the holder stops, the other may take over).
        sent_by_first, sent_by_second = first.stats.broadcasts, second.stats.broadcasts
        rounds_of_second = second.stats.rounds
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert sent_by_first == len(keys)
    assert sent_by_second == 0 and rounds_of_second == 0
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)

    # run() released the lease on its way out: now the other one may send.
    submit_mints(sessions, chain.registry, issuer_account.address, ["lease-late"], owner=owner)
    assert second.send_once().leased
    assert not first.send_once().leased
    drive(second, lambda: all_final(sessions))
    assert second.stats.broadcasts == 1
    assert len(requests_of(sessions)) == len(keys) + 1
    assert_chain_agrees(chain.w3, chain.registry, sessions, signer=issuer_account.address)
