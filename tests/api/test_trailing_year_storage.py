"""The trailing year as storage loads it (`adapters.db.readings.trailing_year`), on SQLite
and PostgreSQL: for every end it covers, the same total as summing every stored
interval's share, whichever region (summed core, edges, straddlers) an interval falls in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.devices import get_device
from granular.adapters.db.readings import list_intervals, trailing_year
from granular.domain.energy import YIELD_WINDOW, share_wh
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
