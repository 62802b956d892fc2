"""The daemon: APScheduler 3 jobs, each exactly one service call.

What it guarantees:
- every job has an explicit id, `max_instances=1` (a slow run is never overlapped by the
  next), `coalesce=True` (runs missed while busy or down become one run) and a misfire
  grace that fits its period; every service it calls is idempotent, so a repeated or
  coalesced run does no harm;
- a job that raises is logged as one JSON line (`job_failed`, the job id, the error's
  code and message; never a key, a password or an RPC URL) and runs again at its next
  time: no exception stops the daemon;
- `stop()` lets the job in hand finish, then closes what the jobs hold (the sender's
  lease), and returns.

Several replicas may run on one PostgreSQL: the services take their leases (the outbox
sender's, the planner's), so only the holder plans and sends; the others' runs are no-ops
until the holder is gone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from granular.domain.windows import Frequency, window_containing
from granular.errors import GranularError
from granular.services.indexer import ReorgTooDeep
from granular.services.metrics import Metrics, PassReportLike

LOGGER_NAME = "granular.daemon"
_WINDOW_MISFIRE_S = {
    Frequency.HOURLY: 30 * 60,
    Frequency.DAILY: 6 * 3600,
    Frequency.WEEKLY: 6 * 3600,
    Frequency.MONTHLY: 6 * 3600,
    Frequency.QUARTERLY: 6 * 3600,
}


class WindowEndTrigger(BaseTrigger):  # type: ignore[misc]
    """Fires at each window end of `frequency` plus `grace_s`, in UTC (calendar months and
    quarters included, which no fixed interval can do)."""

    def __init__(self, frequency: Frequency, grace_s: int) -> None:
        self.frequency = frequency
        self.grace = timedelta(seconds=grace_s)

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        return next_window_fire(
            self.frequency, self.grace, previous_fire_time if previous_fire_time else now
        )

    def __str__(self) -> str:
        return f"window_end[{self.frequency.value}+{int(self.grace.total_seconds())}s]"


def next_window_fire(frequency: Frequency, grace: timedelta, after: datetime) -> datetime:
    """The first `window end + grace` strictly after `after`."""
    window = window_containing(frequency, after.astimezone(UTC) - grace)
    return window.end + grace


@dataclass(frozen=True, slots=True)
class Work:
    """The service calls the jobs make, bound to their sessions, chain and sender.

    plan(now, frequencies): issuance.plan; None plans every due window (the catch-up).
    settle(now): issuance.settle. advance(now): issuance.advance_reservations.
    send(): one outbox round; returns whether this process holds the sender lease.
    close(): releases what the work holds (the sender lease); called once at stop.
    """

    plan: Callable[[datetime, Collection[Frequency] | None], PassReportLike]
    settle: Callable[[datetime], PassReportLike]
    advance: Callable[[datetime], int]
    send: Callable[[], bool]
    close: Callable[[], None]
    # indexer.index_once on the registry (None: no mirror job); match(now): matching.claim.
    index: Callable[[], object] | None = None
    match: Callable[[datetime], object] | None = None


@dataclass(frozen=True, slots=True)
class Timing:
    grace_s: int = 300
    send_interval_s: float = 1.0
    settle_interval_s: float = 2.0
    catch_up_interval_s: float = 60.0
    lifecycle_interval_s: float = 60.0
    index_interval_s: float = 2.0
    match_interval_s: float = 10.0
    frequencies: tuple[Frequency, ...] = tuple(Frequency)


@dataclass(frozen=True, slots=True)
class JobSpec:
    id: str
    trigger: BaseTrigger
    call: Callable[[], object]
    misfire_grace_time: int
    run_at_start: bool = False


def _interval_misfire_s(interval_s: float) -> int:
    """Up to five periods late still runs (then coalesced into one), at least 5 s."""
    return max(5, int(interval_s * 5))


def _every(
    job_id: str, interval_s: float, call: Callable[[], object], *, run_at_start: bool = False
) -> JobSpec:
    """A job every `interval_s` seconds, with the misfire grace that interval gets."""
    return JobSpec(
        id=job_id,
        trigger=IntervalTrigger(seconds=interval_s, timezone=UTC),
        call=call,
        misfire_grace_time=_interval_misfire_s(interval_s),
        run_at_start=run_at_start,
    )


class Daemon:
    """The scheduler and its jobs. `start()` returns at once; `stop()` waits for the job in
    hand. Time comes from `clock` so tests drive what each job is called with."""

    def __init__(
        self,
        *,
        work: Work,
        timing: Timing,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        logger: logging.Logger | None = None,
    ) -> None:
        self.work = work
        self.timing = timing
        self.metrics = metrics
        self.clock = clock
        self.log = logger or logging.getLogger(LOGGER_NAME)
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self._closed = False
        if metrics is not None:
            metrics.watch_scheduler(lambda: bool(self.scheduler.running))

    # --- the jobs -----------------------------------------------------------------------

    def specs(self) -> list[JobSpec]:
        t = self.timing
        specs = [
            JobSpec(
                id=f"issuance:{frequency.value}",
                trigger=WindowEndTrigger(frequency, t.grace_s),
                call=self._plan_for(frequency),
                misfire_grace_time=_WINDOW_MISFIRE_S[frequency],
            )
            for frequency in t.frequencies
        ]
        specs += [
            _every("issuance:catch-up", t.catch_up_interval_s, self._catch_up, run_at_start=True),
            _every("outbox:send", t.send_interval_s, self._send, run_at_start=True),
            _every("issuance:settle", t.settle_interval_s, self._settle),
            _every(
                "reservations:lifecycle", t.lifecycle_interval_s, self._advance, run_at_start=True
            ),
        ]
        if self.work.index is not None:
            specs.append(
                _every("indexer:index", t.index_interval_s, self._index, run_at_start=True)
            )
        if self.work.match is not None:
            specs.append(
                _every("matching:claim", t.match_interval_s, self._match, run_at_start=True)
            )
        return specs

    def _index(self) -> object:
        assert self.work.index is not None
        try:
            return self.work.index()
        except ReorgTooDeep as error:  # nothing the next run can repair: say what to do
            self._event(
                logging.ERROR,
                "reorg_too_deep",
                job="indexer:index",
                message=str(error),
                advice="stop the daemon and run `granular reindex`",
            )
            return None

    def _match(self) -> object:
        assert self.work.match is not None
        return self.work.match(self.clock())

    def _plan_for(self, frequency: Frequency) -> Callable[[], object]:
        def plan() -> object:
            return self._counted(self.work.plan(self.clock(), (frequency,)))

        return plan

    def _catch_up(self) -> object:
        return self._counted(self.work.plan(self.clock(), None))

    def _settle(self) -> object:
        return self._counted(self.work.settle(self.clock()))

    def _advance(self) -> object:
        return self.work.advance(self.clock())

    def _send(self) -> object:
        leased = self.work.send()
        if self.metrics is not None:
            self.metrics.outbox_leased(leased)
        return leased

    def _counted(self, report: PassReportLike) -> PassReportLike:
        if self.metrics is not None:
            self.metrics.count_pass(report)
        return report

    def guarded(self, spec: JobSpec) -> Callable[[], None]:
        """The job as the scheduler runs it: its exception logged, never raised."""

        def run() -> None:
            if self.metrics is not None:
                self.metrics.job_runs.labels(spec.id).inc()
            try:
                result = spec.call()
            except Exception as error:  # a job boundary: log it, the next run tries again
                if self.metrics is not None:
                    self.metrics.job_failures.labels(spec.id).inc()
                self._event(logging.ERROR, "job_failed", job=spec.id, **describe(error))
                return
            fields = _report_fields(result)
            if fields:
                self._event(logging.INFO, "job_done", job=spec.id, **fields)

        return run

    # --- start and stop -----------------------------------------------------------------

    def start(self) -> None:
        now = self.clock()
        for spec in self.specs():
            options: dict[str, Any] = {}
            if spec.run_at_start:
                options["next_run_time"] = now
            self.scheduler.add_job(
                self.guarded(spec),
                trigger=spec.trigger,
                id=spec.id,
                name=spec.id,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=spec.misfire_grace_time,
                replace_existing=True,
                **options,
            )
        self.scheduler.start()
        self._event(logging.INFO, "daemon_started", jobs=[spec.id for spec in self.specs()])

    def stop(self) -> None:
        """Finish the jobs in hand, run no new one, release the leases. Idempotent."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if not self._closed:
            self._closed = True
            try:
                self.work.close()
            except Exception as error:  # stopping goes on: the lease expires by itself
                self._event(logging.WARNING, "close_failed", **describe(error))
            self._event(logging.INFO, "daemon_stopped")

    def _event(self, level: int, event: str, **fields: Any) -> None:
        self.log.log(level, json.dumps({"event": event, **fields}, default=str))


def describe(error: BaseException) -> dict[str, Any]:
    """What a log line may say about an error: our errors' code and message (they are
    written to carry no secret); for anything else only its class, since a driver's
    message may quote a URL with its credentials."""
    if isinstance(error, GranularError):
        return {"error": error.code, "message": str(error)}
    return {"error": type(error).__name__}


def _report_fields(result: object) -> dict[str, Any]:
    """A pass report's non-zero counts, for the job_done line; nothing for a quiet pass."""
    names: Sequence[str] = (
        "items_planned",
        "batches_submitted",
        "certificates_issued",
        "items_failed",
        "events",
        "claims_submitted",
        "matched_wh",
    )
    fields = {name: getattr(result, name) for name in names if getattr(result, name, 0)}
    warnings = getattr(result, "warnings", ())
    if warnings:
        fields["warnings"] = len(warnings)
    if isinstance(result, int) and not isinstance(result, bool) and result:
        fields["changed"] = result
    return fields
