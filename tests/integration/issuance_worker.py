"""Issuance in a process of its own, for the kill -9 tests:

    python -m tests.integration.issuance_worker DATABASE_URL RPC_URL REGISTRY NOW
        --stop-in plan|send [--batch-size N]

`plan`: plans with batches of N items and, once the first batch is committed, prints
`stopped in plan` and hangs there (the test kills it with SIGKILL between two batches).
`send`: plans everything, then runs the outbox sender, which hangs the second time it has
broadcast a batch and not yet marked it sent (`stopped in send`).
"""

from __future__ import annotations

import argparse
import threading
from collections import Counter
from datetime import datetime

from granular.adapters.chain.keys import anvil_account
from granular.adapters.db.engine import make_engine, session_factory
from granular.services import issuance
from granular.services.outbox import AFTER_BROADCAST_BEFORE_MARK, OutboxConfig, OutboxSender

CHAIN_ID = 31337


def _hang(message: str) -> None:
    print(message, flush=True)
    threading.Event().wait()  # until the test kills this process


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database_url")
    parser.add_argument("rpc_url")
    parser.add_argument("registry")
    parser.add_argument("now")
    parser.add_argument("--stop-in", choices=["plan", "send"], required=True)
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()
    engine = make_engine(args.database_url)
    sessions = session_factory(engine)
    account = anvil_account(0)
    context = issuance.IssuanceContext(
        chain_id=CHAIN_ID,
        registry=args.registry,
        issuer=account.address,
        rpc_url=args.rpc_url,
        batch_size=args.batch_size,
        items_per_commit=args.batch_size,  # one batch per transaction
    )
    now = datetime.fromisoformat(args.now)

    def progress(done: int, total: int) -> None:
        if args.stop_in == "plan" and done == 1 and total > 1:
            _hang("stopped in plan")

    issuance.plan(sessions=sessions, context=context, now=now, progress=progress)
    reached: Counter[str] = Counter()

    def fault(point: str) -> None:
        reached[point] += 1
        if point == AFTER_BROADCAST_BEFORE_MARK and reached[point] == 2:
            _hang("stopped in send")

    sender = OutboxSender(
        engine=engine,
        rpc_url=args.rpc_url,
        account=account,
        config=OutboxConfig(chain_id=CHAIN_ID, batch_size=1, poll_interval_s=0.01),
        fault=fault,
    )
    while True:
        sender.send_once()
        issuance.settle(sessions=sessions, context=context, now=now)


if __name__ == "__main__":
    main()
