"""The daemon's jobs: when they fire, with which options, and what a failing job does."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from granular.domain.windows import Frequency
from granular.errors import GranularError
from granular.scheduler.daemon import Daemon, Timing, WindowEndTrigger, Work, next_window_fire
from granular.scheduler.stack import StopSignal

T = datetime(2026, 3, 31, 23, 59, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("frequency", "after", "grace_s", "expected"),
    [
        (Frequency.HOURLY, T, 300, datetime(2026, 4, 1, 0, 5, tzinfo=UTC)),
        # Exactly at a fire time: the next one, never the same instant twice.
        (
            Frequency.HOURLY,
            datetime(2026, 4, 1, 0, 5, tzinfo=UTC),
            300,
            datetime(2026, 4, 1, 1, 5, tzinfo=UTC),
        ),
        # Inside the grace of the previous window: that window's fire time is still ahead.
        (
            Frequency.HOURLY,
            datetime(2026, 4, 1, 0, 4, 59, tzinfo=UTC),
            300,
            datetime(2026, 4, 1, 0, 5, tzinfo=UTC),
        ),
        (Frequency.DAILY, T, 0, datetime(2026, 4, 1, tzinfo=UTC)),
        (Frequency.WEEKLY, T, 60, datetime(2026, 4, 6, 0, 1, tzinfo=UTC)),  # a Monday
        (Frequency.MONTHLY, T, 300, datetime(2026, 4, 1, 0, 5, tzinfo=UTC)),
        (
            Frequency.MONTHLY,
            datetime(2026, 2, 10, tzinfo=UTC),
            300,
            datetime(2026, 3, 1, 0, 5, tzinfo=UTC),
        ),
        (
            Frequency.QUARTERLY,
            datetime(2026, 4, 1, 0, 6, tzinfo=UTC),
            300,
            datetime(2026, 7, 1, 0, 5, tzinfo=UTC),
        ),
    ],
    ids=[
        "hourly",
        "hourly-at-fire-time",
        "hourly-within-grace",
        "daily",
        "weekly-monday",
        "monthly-end-of-march",
        "monthly-february",
        "quarterly",
    ],
)
def test_window_jobs_fire_at_window_end_plus_grace(
    frequency: Frequency, after: datetime, grace_s: int, expected: datetime
) -> None:
    assert next_window_fire(frequency, timedelta(seconds=grace_s), after) == expected


def test_the_trigger_moves_on_from_its_previous_fire_time() -> None:
    trigger = WindowEndTrigger(Frequency.HOURLY, 300)
    first = trigger.get_next_fire_time(None, T)
    assert first == datetime(2026, 4, 1, 0, 5, tzinfo=UTC)
    # APScheduler passes the previous fire time once the job ran (even if `now` is later).
    assert trigger.get_next_fire_time(first, T) == datetime(2026, 4, 1, 1, 5, tzinfo=UTC)


@dataclass
class Report:
    items_planned: int = 0
    batches_submitted: int = 0
    certificates_issued: int = 0
    items_failed: int = 0
    warnings: tuple[str, ...] = ()


@dataclass
class FakeWork:
    """Records each service call; `fail` makes plan raise; `slow_s` makes settle slow."""

    calls: list[tuple[str, object]] = field(default_factory=list)
    fail: BaseException | None = None
    slow_s: float = 0.0
    closed: int = 0
    settling: threading.Event = field(default_factory=threading.Event)
    settled: threading.Event = field(default_factory=threading.Event)

    def plan(self, now: datetime, frequencies: Collection[Frequency] | None) -> Report:
        self.calls.append(("plan", None if frequencies is None else tuple(frequencies)))
        if self.fail is not None:
            raise self.fail
        return Report(items_planned=3, batches_submitted=1)

    def settle(self, now: datetime) -> Report:
        self.calls.append(("settle", now))
        self.settling.set()
        time.sleep(self.slow_s)
        self.settled.set()
        return Report(certificates_issued=2)

    def advance(self, now: datetime) -> int:
        self.calls.append(("advance", now))
        return 0

    def send(self) -> bool:
        self.calls.append(("send", None))
        return True

    def close(self) -> None:
        self.closed += 1

    def work(self) -> Work:
        return Work(
            plan=self.plan,
            settle=self.settle,
            advance=self.advance,
            send=self.send,
            close=self.close,
        )


def test_every_job_has_an_id_one_instance_coalescing_and_a_grace_that_fits() -> None:
    fake = FakeWork()
    daemon = Daemon(work=fake.work(), timing=Timing(settle_interval_s=3600))
    daemon.scheduler.start(paused=True)
    try:
        for spec in daemon.specs():
            daemon.scheduler.add_job(
                daemon.guarded(spec),
                trigger=spec.trigger,
                id=spec.id,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=spec.misfire_grace_time,
            )
        jobs = {job.id: job for job in daemon.scheduler.get_jobs()}
    finally:
        daemon.scheduler.shutdown(wait=False)
    assert set(jobs) == {
        "issuance:hourly",
        "issuance:daily",
        "issuance:weekly",
        "issuance:monthly",
        "issuance:quarterly",
        "issuance:catch-up",
        "outbox:send",
        "issuance:settle",
        "reservations:lifecycle",
    }
    for job in jobs.values():
        assert (job.max_instances, job.coalesce) == (1, True), job.id
    assert jobs["issuance:hourly"].misfire_grace_time == 1800  # half its hour
    assert jobs["outbox:send"].misfire_grace_time == 5
    assert jobs["issuance:settle"].misfire_grace_time == 5 * 3600


def test_each_job_makes_one_service_call() -> None:
    fake = FakeWork()
    daemon = Daemon(work=fake.work(), timing=Timing())
    for spec in daemon.specs():
        before = len(fake.calls)
        daemon.guarded(spec)()
        assert len(fake.calls) == before + 1, spec.id
    assert ("plan", (Frequency.MONTHLY,)) in fake.calls
    assert ("plan", None) in fake.calls  # the catch-up plans every due window


def test_a_failing_job_is_one_log_line_without_secrets_and_the_daemon_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeWork(fail=ConnectionError("http://user:hunter2@rpc.example/key=SECRET"))
    timing = Timing(catch_up_interval_s=0.2, settle_interval_s=0.2, frequencies=())
    daemon = Daemon(work=fake.work(), timing=timing)
    with caplog.at_level(logging.INFO, logger="granular.daemon"):
        daemon.start()
        deadline = time.monotonic() + 10
        while sum(1 for c in fake.calls if c[0] == "plan") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.scheduler.running
        daemon.stop()
    failures = [
        json.loads(r.getMessage()) for r in caplog.records if "job_failed" in r.getMessage()
    ]
    assert len(failures) >= 3  # it kept running the job after it raised
    assert failures[0] == {
        "event": "job_failed",
        "job": "issuance:catch-up",
        "error": "ConnectionError",
    }
    assert "hunter2" not in caplog.text and "SECRET" not in caplog.text
    assert any(c[0] == "settle" for c in fake.calls)  # the other jobs went on


def test_our_errors_are_logged_with_their_code_and_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Boom(GranularError):
        code = "boom"

    daemon = Daemon(work=FakeWork(fail=Boom("window 5 is odd")).work(), timing=Timing())
    catch_up = next(s for s in daemon.specs() if s.id == "issuance:catch-up")
    with caplog.at_level(logging.INFO, logger="granular.daemon"):
        daemon.guarded(catch_up)()
    (line,) = [json.loads(r.getMessage()) for r in caplog.records]
    assert line == {
        "event": "job_failed",
        "job": "issuance:catch-up",
        "error": "boom",
        "message": "window 5 is odd",
    }


def test_stop_lets_the_job_in_hand_finish_then_releases_once() -> None:
    fake = FakeWork(slow_s=1.0)
    timing = Timing(settle_interval_s=0.1, frequencies=())
    daemon = Daemon(work=fake.work(), timing=timing)
    daemon.start()
    assert fake.settling.wait(10)
    daemon.stop()
    assert fake.settled.is_set(), "stop returned before the running job finished"
    assert not daemon.scheduler.running
    daemon.stop()
    assert fake.closed == 1


def test_a_first_signal_asks_for_a_clean_stop_and_a_second_ctrl_c_forces() -> None:
    forced: list[bool] = []
    # What was there before (default_int_handler, or SIG_IGN for a job started in the
    # background by a non-interactive shell) is what comes back.
    before = signal.getsignal(signal.SIGINT)
    stop = StopSignal(lambda: forced.append(True)).install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.event.wait(5)
        assert forced == []
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM is still the clean stop
        time.sleep(0.1)
        assert forced == []
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5
        while not forced and time.monotonic() < deadline:
            time.sleep(0.01)
        assert forced == [True]
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is before


def test_plans_of_one_process_never_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    from granular.scheduler import stack

    inside: list[int] = []
    overlaps: list[int] = []

    def slow_plan(**_: object) -> Report:
        inside.append(1)
        if len(inside) > 1:
            overlaps.append(len(inside))
        time.sleep(0.2)
        inside.pop()
        return Report()

    class Lease:
        def release(self) -> None: ...

    class Sender:
        def close(self) -> None: ...

    monkeypatch.setattr(stack.issuance, "plan", slow_plan)
    monkeypatch.setattr(stack.issuance, "planner_lease", lambda *_, **__: Lease())
    context = stack.issuance.IssuanceContext(
        chain_id=31337, registry="0x" + "1" * 40, issuer="0x" + "2" * 40, rpc_url="http://x"
    )
    work = stack.issuance_work(
        settings=stack.Settings(),
        engine=None,  # type: ignore[arg-type]
        sessions=None,  # type: ignore[arg-type]
        sender=Sender(),  # type: ignore[arg-type]
        context=context,
    )
    threads = [
        threading.Thread(target=work.plan, args=(T, frequencies))
        for frequencies in (None, (Frequency.HOURLY,), (Frequency.DAILY,))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []


def test_the_indexer_and_matching_jobs_are_one_call_each_and_a_deep_reorg_says_reindex(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from dataclasses import replace

    from granular.services.indexer import ReorgTooDeep

    calls: list[str] = []

    def index() -> object:
        calls.append("index")
        raise ReorgTooDeep(120, 64)

    def match(now: datetime) -> object:
        calls.append("match")
        return None

    work = replace(FakeWork().work(), index=index, match=match)
    daemon = Daemon(work=work, timing=Timing(index_interval_s=3, match_interval_s=7))
    specs = {spec.id: spec for spec in daemon.specs()}
    assert specs["indexer:index"].run_at_start and specs["indexer:index"].misfire_grace_time == 15
    with caplog.at_level(logging.INFO, logger="granular.daemon"):
        daemon.guarded(specs["indexer:index"])()
        daemon.guarded(specs["matching:claim"])()
    assert calls == ["index", "match"]
    (line,) = [json.loads(r.getMessage()) for r in caplog.records]
    assert line["event"] == "reorg_too_deep" and "granular reindex" in line["advice"]
    # Without them (a Work built before the mirror existed) there is no such job.
    assert not {"indexer:index", "matching:claim"} & {
        s.id for s in Daemon(work=FakeWork().work(), timing=Timing()).specs()
    }
