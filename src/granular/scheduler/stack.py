"""What `granular run`, `issue-once`, `verify` and `show` stand on: a checked chain, the
issuance work bound to it, the API beside the daemon, and a clean stop.

- With GRANULAR_RPC_URL: the record deployments/<network>.json, checked against the RPC
  (chain id, code at the registry) and the issuer key from the keystore, before anything
  starts; any failure is one line (services.deployment.open_chain).
- Without it (the embedded default): an anvil of its own whose chain lives in
  var/anvil-state.json, the registry deployed on first start (record in
  deployments/<network>.json), var/anvil.json telling other commands where it answers. A
  command started while a `granular run` is up attaches to that anvil instead.
- First SIGINT/SIGTERM: the job in hand finishes, the leases are released, exit 0. A second
  SIGINT: anvil is stopped and the process exits at once (130).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.anvil import (
    Anvil,
    AnvilFailed,
    EmbeddedChain,
    free_port,
    persistent_anvil,
    read_only_anvil,
)
from granular.adapters.chain.client import redact_url
from granular.adapters.db.engine import make_engine, session_factory
from granular.adapters.db.migrate import upgrade
from granular.config import Settings
from granular.domain.windows import Frequency
from granular.errors import ConfigurationError, GranularError
from granular.paths import project_root
from granular.scheduler.daemon import Daemon, Timing, Work
from granular.services import issuance, matching, outbox
from granular.services.commands import RegistryCommands
from granular.services.deployment import ChainTarget, ensure_deployment, open_chain
from granular.services.examples import load_examples, loaded
from granular.services.indexer import (
    IndexerConfig,
    IndexReport,
    index_once,
    open_source,
    reindex,
)
from granular.services.metrics import Metrics, PassReportLike, last_confirmed_block
from granular.services.outbox import OutboxSender, config_from_settings, send_once

log = logging.getLogger("granular")


class Purpose(StrEnum):
    RUN = "run"  # the daemon: starts the embedded anvil (refused if one is up)
    SEND = "send"  # issue-once: attaches to a running embedded anvil, else starts one
    READ = "read"  # verify: attaches, else loads the saved state read-only; no key


class AlreadyRunning(ConfigurationError):
    code = "already_running"


class NoEmbeddedChain(ConfigurationError):
    code = "no_embedded_chain"


class ApiFailed(GranularError):
    code = "api_failed"


# --- the chain -----------------------------------------------------------------------------


@dataclass
class OpenChain:
    target: ChainTarget
    anvil: Anvil | None  # the embedded anvil this process started, if any
    embedded: bool
    deployed: bool = False


@contextmanager
def chain_for(settings: Settings, purpose: Purpose) -> Iterator[OpenChain]:
    record_path = settings.deployments_path()
    signing = purpose is not Purpose.READ
    if settings.rpc_url:
        yield OpenChain(
            open_chain(
                rpc_url=settings.rpc_url,
                record_path=record_path,
                keystore=settings.keystore,
                password_file=settings.password_file,
                signing=signing,
            ),
            anvil=None,
            embedded=False,
        )
        return
    var_dir = settings.var_dir
    running = EmbeddedChain.running(var_dir)
    if running is not None and running.orphaned() and purpose is not Purpose.READ:
        _event("orphaned_anvil_stopped", url=running.url, pid=running.anvil_pid)
        running.stop_orphan()  # its state is dumped; the new anvil loads it
        running = EmbeddedChain.running(var_dir)
    if running is not None:
        if purpose is Purpose.RUN:
            raise AlreadyRunning(
                f"a granular run already uses {var_dir}/ (its anvil answers at {running.url}, "
                f"pid {running.pid}); stop it first or give another GRANULAR_VAR_DIR"
            )
        yield OpenChain(
            open_chain(
                rpc_url=running.url,
                record_path=record_path,
                keystore=None,
                password_file=None,
                signing=signing,
            ),
            anvil=None,
            embedded=True,
        )
        return
    if purpose is Purpose.READ:
        anvil = read_only_anvil(var_dir)
        if anvil is None:
            raise NoEmbeddedChain(
                f"no embedded chain in {var_dir}/ and no GRANULAR_RPC_URL; `make run` first"
            )
    else:
        var_dir.mkdir(parents=True, exist_ok=True)
        anvil = persistent_anvil(var_dir, port=settings.anvil_port)
    with anvil:
        deployed = False
        if purpose is not Purpose.READ:
            _, deployed = ensure_deployment(
                rpc_url=anvil.url, network=settings.network, directory=record_path.parent
            )
            EmbeddedChain(url=anvil.url, pid=os.getpid(), anvil_pid=anvil.pid).write(var_dir)
        try:
            target = open_chain(
                rpc_url=anvil.url,
                record_path=record_path,
                keystore=None,
                password_file=None,
                signing=signing,
            )
            yield OpenChain(target, anvil=anvil, embedded=True, deployed=deployed)
        finally:
            if purpose is not Purpose.READ:
                EmbeddedChain.remove(var_dir)


# --- the work ------------------------------------------------------------------------------


def issuance_context(settings: Settings, target: ChainTarget) -> issuance.IssuanceContext:
    return issuance.IssuanceContext(
        chain_id=target.chain_id,
        registry=target.registry,
        issuer=target.issuer,
        rpc_url=target.rpc_url,
        grace_s=settings.grace_s,
        batch_size=settings.issuance_batch_size,
        max_energy_policy=settings.max_energy_policy(),
    )


def make_sender(settings: Settings, engine: Engine, target: ChainTarget) -> OutboxSender:
    if target.account is None:
        raise ConfigurationError("sending needs the issuer key")
    return OutboxSender(
        engine=engine,
        rpc_url=target.rpc_url,
        account=target.account,
        config=config_from_settings(settings, chain_id=target.chain_id),
    )


def issuance_work(
    *,
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    sender: OutboxSender,
    context: issuance.IssuanceContext,
) -> Work:
    """The daemon's jobs bound to granular.services.issuance, this process's sender and
    its planner lease (only the holder plans; the sender has a lease of its own)."""
    lease = issuance.planner_lease(engine, context.chain_id, ttl_s=settings.outbox_lease_ttl_s)
    # The per-frequency jobs and the catch-up may fire together: one plan at a time in this
    # process (the lease object is not thread-safe, and two passes would race for the
    # same windows only to have the unique item key roll one back).
    planning = threading.Lock()

    def plan(now: datetime, frequencies: Collection[Frequency] | None) -> PassReportLike:
        with planning:
            return issuance.plan(
                sessions=sessions, context=context, now=now, frequencies=frequencies, lease=lease
            )

    def settle(now: datetime) -> PassReportLike:
        return issuance.settle(sessions=sessions, context=context, now=now)

    def advance(now: datetime) -> int:
        return issuance.advance_reservations(sessions=sessions, now=now)

    def send() -> bool:
        return send_once(sender).leased

    def close() -> None:
        sender.close()
        with planning, contextlib.suppress(DBAPIError):  # gone: it expires or dies with it
            lease.release()

    return Work(plan=plan, settle=settle, advance=advance, send=send, close=close)


def timing(settings: Settings) -> Timing:
    return Timing(
        grace_s=settings.grace_s,
        send_interval_s=settings.outbox_poll_interval_s,
        settle_interval_s=settings.settle_interval_s,
        catch_up_interval_s=settings.catch_up_interval_s,
        lifecycle_interval_s=settings.lifecycle_interval_s,
        index_interval_s=settings.index_interval_s,
        match_interval_s=settings.match_interval_s,
    )


# --- the mirror and the signed commands ----------------------------------------------------


def indexer_config(settings: Settings, target: ChainTarget) -> IndexerConfig:
    """From the deployment record (its block) and GRANULAR_CONFIRMATIONS[_BY_CHAIN], the
    depth the outbox confirms at, so the mirror holds exactly what the outbox calls
    confirmed: the outbox counts the including block as confirmation 1, the indexer reads
    up to head - confirmations, hence K - 1."""
    depth = settings.confirmations_by_chain.get(target.chain_id, settings.confirmations)
    return IndexerConfig(
        chain_id=target.chain_id,
        deployment_block=int(target.record.get("blockNumber", 0)),
        confirmations=max(0, depth - 1),
    )


def index_work(
    settings: Settings, sessions: sessionmaker[Session], target: ChainTarget
) -> Callable[[], IndexReport]:
    source, _ = open_source(rpc_url=target.rpc_url, registry=target.registry)
    config = indexer_config(settings, target)
    indexing = threading.Lock()

    def index() -> IndexReport:
        with indexing:
            return index_once(
                sessions=sessions, source=source, config=config, now=lambda: datetime.now(UTC)
            )

    return index


def with_mirror_and_matching(
    work: Work,
    *,
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    target: ChainTarget,
) -> Work:
    """The daemon's work plus `indexer:index` and `matching:claim` (under the lease
    "matching:<chain id>", released at stop with the others)."""
    context = matching.MatchingContext(
        chain_id=target.chain_id,
        registry=target.registry,
        issuer=target.issuer,
        batch_size=settings.match_batch_size,
    )
    lease = matching.matching_lease(engine, target.chain_id, ttl_s=settings.outbox_lease_ttl_s)
    passing = threading.Lock()  # the lease object is not thread-safe

    def match(now: datetime) -> matching.MatchReport:
        with passing:
            return matching.claim(sessions=sessions, context=context, now=now, lease=lease)

    def close() -> None:
        work.close()
        with passing, contextlib.suppress(DBAPIError):
            lease.release()

    return replace(work, index=index_work(settings, sessions, target), match=match, close=close)


def registry_commands(target: ChainTarget) -> RegistryCommands:
    """Signed commands relayed by the issuer key (the outbox signer of this deployment).

    The checks read the chain's views, not the mirror: the mirror trails the head by
    GRANULAR_CONFIRMATIONS blocks plus an indexer period, and a check against a slice
    that was moved or claimed a block ago would accept a command that then reverts on
    chain, which is what the checks exist to prevent. A view is one eth_call per slice or
    wallet a command names; the mirror serves the read API and the matching job.

    Nothing is asked of the node here (`target` was checked when the chain was opened): a
    node that stops answering later makes each route that needs it answer 503
    `chain_unavailable` with Retry-After, within one view timeout, and the routes recover
    by themselves when it is back."""
    from granular.adapters.chain.forwarder import ChainRegistryView

    view = ChainRegistryView.on(
        target.rpc_url,
        registry=target.registry,
        forwarder=str(target.record["forwarder"]),
        deployment_block=int(target.record.get("blockNumber", 0)),
    )
    return RegistryCommands(
        chain_id=target.chain_id,
        registry=target.registry,
        forwarder=str(target.record["forwarder"]),
        relayer=target.issuer,
        view=view,
        relay_view=view,
        certificates=view,
    )


# --- the API beside the daemon -------------------------------------------------------------


class ApiServer:
    """uvicorn in a thread of this process (it installs no signal handlers there)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    def start(self, timeout_s: float = 20.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ApiFailed(f"the API could not serve on {self.url} (is the port in use?)")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)


# --- signals -------------------------------------------------------------------------------


class StopSignal:
    """First SIGINT/SIGTERM sets the event (a clean stop); a second SIGINT calls `force`."""

    def __init__(self, force: Callable[[], None]) -> None:
        self.event = threading.Event()
        self._force = force
        self._previous: dict[int, Any] = {}

    def install(self) -> StopSignal:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if not self.event.is_set():
            _event("stop_requested", signal=signal.Signals(signum).name)
            self.event.set()
            return
        if signum == signal.SIGINT:
            _event("stop_forced")
            self._force()

    def wait(self) -> None:
        while not self.event.wait(0.5):
            pass


def _event(event: str, **fields: Any) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str))


# --- the commands --------------------------------------------------------------------------


def fleet_path() -> Path:
    return project_root() / "examples" / "fleet.json"


def run(settings: Settings, *, ready: Callable[[str], None] | None = None) -> int:
    """`granular run`: the daemon and the API in one process until SIGINT/SIGTERM."""
    # One line per job run is noise beside the daemon's own job_done / job_failed lines.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with chain_for(settings, Purpose.RUN) as chain:
        target = chain.target
        _event(
            "chain_ready",
            rpc=redact_url(target.rpc_url),
            chainId=target.chain_id,
            registry=target.registry,
            issuer=target.issuer,
            embedded=chain.embedded,
            deployed=chain.deployed,
        )
        if chain.anvil is not None:
            _check_not_behind(chain.anvil, sessions, target.chain_id)
        if chain.embedded and settings.examples:
            _load_examples(settings, sessions)
            _approve_example_operator(target)
        context = issuance_context(settings, target)
        sender = make_sender(settings, engine, target)
        metrics = Metrics(
            sessions=sessions, chain_id=target.chain_id, registry_address=target.registry
        )
        work = issuance_work(
            settings=settings, engine=engine, sessions=sessions, sender=sender, context=context
        )
        work = with_mirror_and_matching(
            work, settings=settings, engine=engine, sessions=sessions, target=target
        )
        daemon = Daemon(work=work, timing=timing(settings), metrics=metrics)
        from granular.api.app import create_app

        app = create_app(
            sessions=sessions, max_energy_policy=settings.max_energy_policy(), metrics=metrics
        )
        app.state.registry_commands = registry_commands(target)
        api = ApiServer(app, settings.api_host, settings.api_port)

        def force() -> None:
            if chain.anvil is not None:
                chain.anvil.stop(timeout_s=3)
            EmbeddedChain.remove(settings.var_dir)
            os._exit(130)

        stop = StopSignal(force).install()
        try:
            api.start()
            print(f"granular: API at {api.url} (docs at {api.url}/docs); Ctrl-C stops", flush=True)
            daemon.start()
            if ready is not None:
                ready(api.url)
            stop.wait()
            daemon.stop()
            api.stop()
        finally:
            daemon.stop()
            stop.restore()
    _event("stopped")
    return 0


def _check_not_behind(anvil: Anvil, sessions: sessionmaker[Session], chain_id: int) -> None:
    """The embedded chain is dumped every few seconds and on a clean stop; if it was lost
    uncleanly (anvil killed -9, a machine crash), the database may hold transactions
    confirmed in blocks the reloaded chain never had. Those are sent again, the very
    signed bytes the outbox stored, so the chain catches up with the database; what cannot
    be replayed is said loudly."""
    last = last_confirmed_block(sessions=sessions, chain_id=chain_id)
    head = anvil.head_block()
    if last is None or head >= last:
        return
    reason: str | None = None
    try:
        replayed = outbox.replay_lost_blocks(
            sessions=sessions,
            chain_id=chain_id,
            head_block=head,
            send_raw=anvil.send_raw_transaction,
        )
    except AnvilFailed as error:
        replayed, reason = -1, str(error)
    now_head = anvil.head_block()
    deadline = time.monotonic() + 10
    while replayed > 0 and now_head <= head and time.monotonic() < deadline:
        time.sleep(0.05)  # anvil mines what it was sent a moment later
        now_head = anvil.head_block()
    event: dict[str, object] = {
        "event": "embedded_chain_replayed" if reason is None else "embedded_chain_behind",
        "headBlockBefore": head,
        "headBlock": now_head,
        "lastConfirmedBlock": last,
        "replayedTransactions": max(replayed, 0),
    }
    if reason is None:
        log.warning(json.dumps(event))
        return
    event["reason"] = reason
    event["advice"] = (
        "the embedded chain lost blocks the database relies on and they could not be "
        "replayed; stop, remove var/ and deployments/local.json, start again"
    )
    log.error(json.dumps(event))


def _load_examples(settings: Settings, sessions: sessionmaker[Session]) -> None:
    done = load_examples(
        sessions=sessions,
        fleet_path=fleet_path(),
        var_dir=settings.var_dir,
        policy=settings.max_energy_policy(),
        now=datetime.now(UTC),
    )
    if done is None:
        marker = loaded(settings.var_dir) or {}
        print(
            f"granular: example fleet loaded on {marker.get('loadedAt', '?')}; "
            f"its API keys are in {settings.var_dir / 'examples.json'}",
            flush=True,
        )
        return
    print(
        f"granular: example fleet loaded: devices {done.devices}, reservation "
        f"{done.reservation_id}, {done.reads_accepted} reads accepted. API keys (shown once; "
        f"also in {settings.var_dir / 'examples.json'}, mode 0600):",
        flush=True,
    )
    for role, key in done.keys.items():
        print(f"  {role}: {key}", flush=True)


def _approve_example_operator(target: ChainTarget) -> None:
    """The example buyer's wallet is anvil's development account 2: on the embedded anvil
    only, it approves the issuer as its operator, so the daemon's matching claims run."""
    from granular.adapters.chain.dev_operator import approve_operator_on_anvil

    fleet = json.loads(fleet_path().read_text(encoding="utf-8"))
    wallet = str(fleet["reservation"]["wallet"])
    outcome = approve_operator_on_anvil(
        rpc_url=target.rpc_url, registry=target.registry, wallet=wallet, operator=target.issuer
    )
    _event("example_operator", wallet=wallet, operator=target.issuer, outcome=outcome)


def issue_once(
    settings: Settings,
    *,
    progress: Callable[[int, int], None] | None = None,
    wait_s: float = 600.0,
) -> dict[str, Any]:
    """One pass for an external cron: plan every due window, send until nothing is in
    flight (or `wait_s` passed), settle. Returns the summary the CLI prints."""
    engine = make_engine(settings.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with chain_for(settings, Purpose.SEND) as chain:
        target = chain.target
        context = issuance_context(settings, target)
        sender = make_sender(settings, engine, target)
        try:
            planned = issuance.plan(
                sessions=sessions, context=context, now=datetime.now(UTC), progress=progress
            )
            deadline = time.monotonic() + wait_s
            leased = True
            while True:
                report = send_once(sender)
                leased = report.leased
                if not leased or (report.in_flight == 0 and not report.more_work):
                    break
                if time.monotonic() > deadline:
                    break
                if not report.more_work:
                    time.sleep(settings.outbox_poll_interval_s)
            settled = issuance.settle(sessions=sessions, context=context, now=datetime.now(UTC))
        finally:
            sender.close()
    return {
        "itemsPlanned": planned.items_planned,
        "batchesSubmitted": planned.batches_submitted,
        "certificatesIssued": settled.certificates_issued,
        "itemsFailed": planned.items_failed + settled.items_failed,
        "senderLeased": leased,
        "warnings": len(planned.warnings) + len(settled.warnings),
    }


def verify(settings: Settings, certificate_id: int) -> issuance.Verification:
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    with chain_for(settings, Purpose.READ) as chain:
        context = issuance_context(settings, chain.target)
        return issuance.verify_certificate(
            sessions=sessions, context=context, certificate_id=certificate_id
        )


def show(settings: Settings, certificate_id: int) -> dict[str, Any]:
    """Header, provenance, tx hash: all stored, so no chain is needed, only the chain id
    of the record."""
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    path = settings.deployments_path()
    try:
        chain_id = int(json.loads(path.read_text(encoding="utf-8"))["chainId"])
    except (OSError, ValueError, KeyError, TypeError):
        raise NoEmbeddedChain(
            f"no readable {path}; `make run` or `granular deploy` first"
        ) from None
    return issuance.show_certificate(
        sessions=sessions, chain_id=chain_id, certificate_id=certificate_id
    )


def index(settings: Settings, *, from_scratch: bool = False) -> dict[str, Any]:
    """`granular index` (one pass) and `granular reindex` (empty the mirror, index again
    from the deployment block). Reads the chain only: no key needed."""
    engine = make_engine(settings.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with chain_for(settings, Purpose.READ) as chain:
        target = chain.target
        source, _ = open_source(rpc_url=target.rpc_url, registry=target.registry)
        config = indexer_config(settings, target)
        now = lambda: datetime.now(UTC)  # noqa: E731
        if from_scratch:
            report = reindex(sessions=sessions, source=source, config=config, now=now)
        else:
            report = index_once(sessions=sessions, source=source, config=config, now=now)
    return {
        "fromBlock": report.from_block,
        "toBlock": report.to_block,
        "events": report.events,
        "reorgAncestor": report.reorg_ancestor,
        "stoppedOnFork": report.stopped_on_fork,
    }


def serve_commands(settings: Settings) -> RegistryCommands | None:
    """`granular serve`: the signed commands when a deployment record and its chain answer
    (relayed by the record's issuer, whose daemon sends them); None otherwise (logged)."""
    try:
        with chain_for(settings, Purpose.READ) as chain:
            if chain.anvil is not None:  # a saved embedded chain, not a live one
                raise NoEmbeddedChain("no running chain to check commands against")
            return registry_commands(chain.target)
    except GranularError as error:
        _event("registry_commands_off", reason=str(error))
        return None
