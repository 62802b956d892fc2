"""A sender in a process of its own, for the kill -9 test:

    python -m tests.integration.outbox_worker DATABASE_URL RPC_URL [--batch-size N]
        [--stop-at POINT --stop-at-count N]

It runs rounds until killed. With --stop-at, the N-th time the sender reaches that fault
point (outbox.AFTER_COMMIT_BEFORE_BROADCAST, AFTER_BROADCAST_BEFORE_MARK) the worker prints
`stopped at POINT` on stdout and hangs there, so the SIGKILL lands exactly in that window.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter

from granular.adapters.chain.keys import anvil_account
from granular.adapters.db.engine import make_engine
from granular.services.outbox import OutboxConfig, OutboxSender

CHAIN_ID = 31337


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database_url")
    parser.add_argument("rpc_url")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--pause-s", type=float, default=0.005)
    parser.add_argument("--stop-at", default=None)
    parser.add_argument("--stop-at-count", type=int, default=1)
    args = parser.parse_args()
    reached: Counter[str] = Counter()

    def pause(point: str) -> None:
        reached[point] += 1
        if point == args.stop_at and reached[point] == args.stop_at_count:
            print(f"stopped at {point}", flush=True)
            threading.Event().wait()  # until the test kills this process
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
