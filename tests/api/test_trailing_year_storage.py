"""The trailing year as storage loads it (`adapters.db.readings.trailing_year`), on SQLite
and PostgreSQL: for every end it covers, the same total as summing every stored
interval's share, whichever region (summed core, edges, straddlers) an interval falls in."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.devices import get_device
from granular.adapters.db.readings import (
    EnergyDayRow,
    add_reads_and_intervals,
    add_submission,
    list_intervals,
    trailing_year,
)
from granular.domain.energy import YIELD_WINDOW, EnergyInterval, TrailingYear, share_wh
from granular.domain.reads import ReadKind
from tests.api.conftest import Keys
from tests.api.test_devices import device


def day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


STORED = [  # (start, end, Wh); the gaps are on purpose
    ("2024-12-01", "2025-01-10", 4000),
    ("2025-01-10", "2025-03-01", 5000),
    ("2025-03-01", "2025-12-31", 30_000),
    ("2025-12-31", "2026-01-05", 999),
    ("2026-01-05", "2026-02-01", 2700),
    ("2026-03-01", "2026-06-01", 9100),
]


@pytest.mark.parametrize(
    ("first_end", "last_end"),
    [
        ("2026-01-03", "2026-01-20"),  # straddlers at the window start and the core's end
        ("2026-01-03", "2026-01-03"),
        ("2026-06-01", "2026-06-01"),
        ("2025-02-01", "2026-06-10"),  # over a year: no core, everything fetched
        ("2025-12-31", "2026-01-05"),  # ends exactly at interval boundaries
    ],
    ids=["straddlers", "single-end", "latest", "span-over-a-year", "on-boundaries"],
)
def test_trailing_year_equals_the_sum_of_every_share(
    client: TestClient,
    keys: Keys,
    sessions: sessionmaker[Session],
    first_end: str,
    last_end: str,
) -> None:
    assert client.post("/devices", headers=keys.owner, json=device("site-1")).status_code == 201
    reads = [
        {"starttimestamp": f"{s}T00:00:00Z", "endtimestamp": f"{e}T00:00:00Z", "value": wh}
        for s, e, wh in STORED
    ]
    answer = client.post(
        "/meter-reads/site-1", headers=keys.owner, json={"type": "history", "reads": reads}
    ).json()
    assert answer["summary"]["accepted"] == len(STORED), answer
    first, last = day(first_end), day(last_end)
    with sessions() as session:
        stored = get_device(session=session, organization_id=None, external_id="site-1")
        assert stored is not None
        everything = list_intervals(
            session=session,
            device_id=stored.id,
            device_key="site-1",
            start=day("2000-01-01"),
            end=day("2100-01-01"),
            limit=100,
        )
        year = trailing_year(
            session=session,
            device_id=stored.id,
            device_key="site-1",
            first_end=first,
            last_end=last,
        )
    ends = {first, last, first + (last - first) / 2, first + timedelta(days=1)} - {
        last + timedelta(days=1)
    }
    for end in sorted(e for e in ends if first <= e <= last):
        expected = sum(share_wh(i, end - YIELD_WINDOW, end) for i in everything)
        assert year.energy_wh(end) == expected, end
    assert expected > 0


# --- the daily rollup against a direct sum ------------------------------------------------

T0 = day("2024-01-01")
MINUTE = timedelta(minutes=1)


@st.composite
def stored_intervals(draw: st.DrawFn) -> list[tuple[datetime, datetime, int]]:
    """Non-overlapping (start, end, Wh) on a minute grid over about two years: runs of short
    intervals crossing midnights, long ones spanning days, and gaps up to half a year, so
    the 365-day window and the core's ends fall anywhere, midnights included."""
    moment = T0 + draw(st.integers(0, 3 * 24 * 60)) * MINUTE
    stored: list[tuple[datetime, datetime, int]] = []
    for _ in range(draw(st.integers(1, 30))):
        moment += draw(st.sampled_from([0, 0, 30, 24 * 60, 40 * 24 * 60, 180 * 24 * 60])) * MINUTE
        moment += draw(st.integers(0, 24 * 60)) * MINUTE
        length = draw(st.sampled_from([60, 5 * 60, 24 * 60, 3 * 24 * 60, 50 * 24 * 60]))
        end = moment + (length + draw(st.integers(-59, 59))) * MINUTE
        stored.append((moment, end, draw(st.integers(0, 10**7))))
        moment = end
    return stored


def _ends(
    data: st.DataObject, stored: list[tuple[datetime, datetime, int]]
) -> tuple[datetime, datetime]:
    """A request's first and last end, each anywhere, on a midnight, inside a stored
    interval (the core's end cuts it), or a year after a point inside one or on a boundary
    (the window's start cuts it, or falls on it)."""
    anywhere = st.integers(0, 2 * 24 * 60 * 365).map(lambda m: T0 + m * MINUTE)
    inside = st.sampled_from(stored).flatmap(
        lambda i: st.integers(1, max(1, (i[1] - i[0]) // MINUTE - 1)).map(
            lambda m: i[0] + m * MINUTE
        )
    )
    boundary = st.sampled_from([moment for s, e, _ in stored for moment in (s, e)])
    point = st.one_of(
        anywhere,
        anywhere.map(_midnight),
        inside,
        inside,
        inside,
        inside.map(lambda moment: moment + YIELD_WINDOW),
        boundary.map(lambda moment: moment + YIELD_WINDOW),
    )
    first = data.draw(point)
    if data.draw(st.booleans()):
        span = data.draw(st.sampled_from([0, 60, 3 * 24 * 60, 40 * 24 * 60, 400 * 24 * 60]))
        return first, first + span * MINUTE
    other = data.draw(point)
    return min(first, other), max(first, other)


def _midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0)


def _store(
    client: TestClient,
    keys: Keys,
    sessions: sessionmaker[Session],
    stored: list[tuple[datetime, datetime, int]],
) -> tuple[int, list[EnergyInterval]]:
    """A new device with `stored` saved as ingestion saves accepted intervals (the rollup in
    the same transaction), in two calls so that rollup rows are added to as well."""
    external_id = f"p-{uuid.uuid4().hex[:12]}"
    assert client.post("/devices", headers=keys.owner, json=device(external_id)).status_code == 201
    intervals = [EnergyInterval("p", s, e, wh) for s, e, wh in stored]
    with sessions.begin() as session:
        found = get_device(session=session, organization_id=None, external_id=external_id)
        assert found is not None
        submission = add_submission(
            session=session,
            device_id=found.id,
            api_key_id=None,
            received_at=T0,
            kind="history",
            unit="Wh",
            payload={},
            read_count=len(intervals),
            accepted_count=len(intervals),
            device_revision_id=None,
        )
        for part in (intervals[::2], intervals[1::2]):
            add_reads_and_intervals(
                session=session,
                device_id=found.id,
                submission_id=submission,
                reads=[],
                intervals=[(i, ReadKind.HISTORY) for i in part],
            )
    return found.id, intervals


def _year(
    sessions: sessionmaker[Session], device_id: int, first: datetime, last: datetime
) -> TrailingYear:
    with sessions() as session:
        return trailing_year(
            session=session, device_id=device_id, device_key="p", first_end=first, last_end=last
        )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("stored", "first_end", "last_end"),
    [
        (
            [("2025-06-10T06:00", "2025-06-10T18:00", 1000)],
            "2025-06-10T12:00",
            "2025-06-20T00:00",
        ),
        (
            [("2025-06-08T06:00", "2025-06-12T06:00", 4000)],
            "2025-06-10T12:00",
            "2025-06-20T00:00",
        ),
        (
            [
                ("2024-06-09T22:00", "2024-06-12T02:00", 700),
                ("2024-06-12T02:00", "2025-06-10T00:00", 90_000),
                ("2025-06-10T00:00", "2025-06-10T13:00", 1300),
            ],
            "2025-06-10T12:00",
            "2025-06-11T12:00",
        ),
        (
            [
                ("2025-06-10T01:00", "2025-06-10T03:00", 200),
                ("2025-06-10T03:00", "2025-06-10T04:00", 7),
                ("2025-06-10T11:00", "2025-06-10T13:00", 50),
            ],
            "2025-06-10T12:00",
            "2026-06-10T02:00",
        ),
        (
            [
                ("2025-01-01T23:00", "2025-01-02T01:00", 200),
                ("2025-01-02T01:00", "2025-03-01T00:00", 5000),
            ],
            "2025-06-10T00:00",
            "2025-06-10T00:00",
        ),
    ],
    ids=[
        "core-end-cuts-one-of-its-partial-day",
        "core-end-cuts-one-of-a-whole-day",
        "window-and-core-ends-cut-long-ones",
        "core-within-one-day",
        "across-midnight-inside-the-core",
    ],
)
def test_the_rollup_read_at_the_edges_equals_a_direct_sum(
    client: TestClient,
    keys: Keys,
    sessions: sessionmaker[Session],
    stored: list[tuple[str, str, int]],
    first_end: str,
    last_end: str,
) -> None:
    """The core's partial days, its whole days and the window's start each cut a stored
    interval: the intervals cut by the core's end count by their share, never whole."""
    first, last = at(first_end), at(last_end)
    device_id, intervals = _store(
        client, keys, sessions, [(at(s), at(e), wh) for s, e, wh in stored]
    )
    year = _year(sessions, device_id, first, last)
    for end in (first, last, first + (last - first) / 2):
        expected = sum(share_wh(i, end - YIELD_WINDOW, end) for i in intervals)
        assert year.energy_wh(end) == expected, end
    assert expected > 0


@given(stored=stored_intervals(), data=st.data())
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_year_read_through_the_daily_rollup_equals_a_direct_sum(
    client: TestClient,
    keys: Keys,
    sessions: sessionmaker[Session],
    stored: list[tuple[datetime, datetime, int]],
    data: st.DataObject,
) -> None:
    """Intervals stored as ingestion stores them (the rollup kept in the same transaction),
    a request's ends drawn at random: for each end, the trailing year storage loads equals
    the sum of every interval's share; and each rollup row is its day's intervals' sum."""
    device_id, intervals = _store(client, keys, sessions, stored)
    first, last = _ends(data, stored)
    year = _year(sessions, device_id, first, last)
    with sessions() as session:
        rollup = session.execute(
            select(EnergyDayRow.day, EnergyDayRow.energy_wh).where(
                EnergyDayRow.device_id == device_id
            )
        ).all()
    by_day: dict[date, int] = {}
    for interval in intervals:
        by_day[interval.start.date()] = by_day.get(interval.start.date(), 0) + interval.energy_wh
    assert dict(rollup) == by_day
    picks = [first, last]
    inside = [b + YIELD_WINDOW for s, e, _ in stored for b in (s, e)]
    picks += [end for end in inside if first <= end <= last][:5]
    picks.append(first + (last - first) / 3)
    for end in picks:
        expected = sum(share_wh(i, end - YIELD_WINDOW, end) for i in intervals)
        assert year.energy_wh(end) == expected, (first, last, end)
