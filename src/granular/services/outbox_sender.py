"""The outbox sender: the one way a transaction reaches the chain (DESIGN.md §6).

Guarantees:
- one sender per (chain, signing key), guarded by a lease (a PostgreSQL advisory lock, or a
  lease row elsewhere), taken at the start of each round and checked again before each
  signing; a round without the lease does nothing;
- the RPC's chain id is checked against the configuration before anything is sent;
- each round first reconciles what is in flight (the confirmer, which calls the resender),
  then signs and sends queued requests (the broadcaster);
- a restarted sender, and one back from an outage, broadcasts every stored attempt still in
  flight again;
- while the RPC or the database is down, `run` backs off and marks nothing failed;
  NonceTakenByForeignTransaction and configuration errors end it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from granular.adapters.chain.artifacts import ErrorDecoder
from granular.adapters.chain.client import ChainUnavailable
from granular.adapters.chain.rpc import Rpc, TxSigner, default_decoder
from granular.adapters.db.engine import session_factory
from granular.adapters.db.lease import Lease, make_lease
from granular.domain.outbox import backoff_s
from granular.services.outbox_broadcaster import Broadcaster
from granular.services.outbox_common import (
    LOGGER_NAME,
    ChainIdMismatch,
    LeaseLost,
    OutboxLog,
    Outcome,
    SenderContext,
    SenderStats,
    SendReport,
)
from granular.services.outbox_config import OutboxConfig
from granular.services.outbox_confirmer import Confirmer
from granular.services.outbox_resender import Resender


class OutboxSender:
    """Sends the outbox of one signing key on one chain. Not thread-safe: one per process."""

    def __init__(
        self,
        *,
        engine: Engine,
        rpc_url: str,
        account: LocalAccount,
        config: OutboxConfig,
        decoder: ErrorDecoder | None = None,
        clock: Callable[[], float] = time.time,
        fault: Callable[[str], None] | None = None,
        lease: Lease | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        signer = TxSigner(account)
        self.config = config
        self.signer: str = signer.address
        self.chain_id = config.chain_id
        self.lease = lease or make_lease(
            engine,
            f"outbox:{config.chain_id}:{self.signer}",
            ttl_s=config.lease_ttl_s,
            clock=clock,
        )
        self._ctx = SenderContext(
            config=config,
            signer=signer,
            rpc=Rpc(rpc_url, timeout_s=config.rpc_timeout_s),
            sessions=session_factory(engine),
            decoder=decoder if decoder is not None else default_decoder(),
            clock=clock,
            fault=fault,
            log=OutboxLog(
                logger or logging.getLogger(LOGGER_NAME),
                chain_id=config.chain_id,
                signer=signer.address,
            ),
            still_leased=self.lease.acquire,
        )
        self.stats: SenderStats = self._ctx.stats
        self._broadcaster = Broadcaster(self._ctx)
        self._resender = Resender(self._ctx, self._broadcaster)
        self._confirmer = Confirmer(self._ctx, self._broadcaster, self._resender)
        self._chain_checked = False
        self._resumed = False  # the first round re-broadcasts everything in flight

    # --- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Rounds until `stop` is set; backs off while the RPC or the database is down.

        Nothing is marked failed while unavailable. NonceTakenByForeignTransaction and
        configuration errors end the loop (and propagate). The lease is released on exit.
        """
        try:
            while not stop.is_set():
                try:
                    report = self.send_once()
                except (ChainUnavailable, OperationalError, InterfaceError) as error:
                    delay = self._failed(error)
                    stop.wait(delay)
                    continue
                if not report.more_work:
                    stop.wait(self.config.poll_interval_s)
        finally:
            self.close()

    def _failed(self, error: Exception) -> float:
        self.stats.failures += 1
        self.stats.consecutive_failures += 1
        n = self.stats.consecutive_failures
        delay = backoff_s(
            failures=n, initial_s=self.config.backoff_initial_s, max_s=self.config.backoff_max_s
        )
        what = "rpc_unavailable" if isinstance(error, ChainUnavailable) else "database_unavailable"
        self._ctx.log.alert(
            what,
            level=logging.WARNING,
            reason=str(error) if isinstance(error, ChainUnavailable) else type(error).__name__,
            consecutive_failures=n,
            retry_in_s=round(delay, 3),
        )
        self._resumed = False  # after an outage, re-broadcast everything in flight
        return delay

    def close(self) -> None:
        """Release the lease (a clean stop)."""
        with contextlib.suppress(DBAPIError):  # gone: the lease expires or dies with it
            self.lease.release()

    # --- one round ----------------------------------------------------------------------

    def send_once(self) -> SendReport:
        """One round: reconcile in-flight requests, then sign and send queued ones."""
        if not self.lease.acquire():
            return SendReport(leased=False)
        ctx = self._ctx
        self.stats.rounds += 1
        ctx.new_round()
        if not self._chain_checked:
            actual = ctx.rpc.int_call("eth_chainId", [])
            if actual != self.chain_id:
                raise ChainIdMismatch(self.chain_id, actual, ctx.rpc.url)
            self._chain_checked = True
        head = ctx.head()
        finished: list[Outcome] = []
        broadcast_before = self.stats.broadcasts
        replaced_before = self.stats.replaced
        try:
            in_flight, replaced = self._confirmer.reconcile(
                head, finished, resume=not self._resumed
            )
            self._resumed = True
            signed, more = self._broadcaster.sign_queued(head, finished)
        except LeaseLost:
            self._resumed = False  # whoever holds it now may have sent; look again later
            return SendReport(
                leased=False,
                broadcast=self.stats.broadcasts - broadcast_before,
                replaced=self.stats.replaced - replaced_before,
                finished=tuple(finished),
            )
        self.stats.consecutive_failures = 0
        return SendReport(
            leased=True,
            signed=signed,
            broadcast=self.stats.broadcasts - broadcast_before,
            replaced=replaced,
            in_flight=in_flight + signed,
            more_work=more,
            finished=tuple(finished),
        )
