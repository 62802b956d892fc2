"""A sender in a process of its own, for the kill -9 test:

    python -m tests.integration.outbox_worker DATABASE_URL RPC_URL [--batch-size N]

It runs rounds until killed. A short pause inside each round (after the commit, after the
broadcast) and between rounds widens the windows a SIGKILL can land in.
"""

from __future__ import annotations

import argparse
import threading
import time

from granular.adapters.chain.keys import anvil_account
from granular.adapters.chain.outbox import OutboxConfig, OutboxSender
from granular.adapters.db.engine import make_engine

CHAIN_ID = 31337


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database_url")
    parser.add_argument("rpc_url")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--pause-s", type=float, default=0.02)
    args = parser.parse_args()

    def pause(_point: str) -> None:
        time.sleep(args.pause_s)

    sender = OutboxSender(
        engine=make_engine(args.database_url),
        rpc_url=args.rpc_url,
        account=anvil_account(0),
        config=OutboxConfig(
            chain_id=CHAIN_ID,
            batch_size=args.batch_size,
            poll_interval_s=args.pause_s,
            backoff_initial_s=0.02,
            backoff_max_s=0.1,
        ),
        fault=pause,
    )
    stop = threading.Event()
    while not stop.is_set():
        report = sender.send_once()
        time.sleep(args.pause_s * (1 if report.leased else 5))


if __name__ == "__main__":
    main()
