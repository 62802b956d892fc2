"""The example fleet `make run` loads: through the services, every read accepted, once."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.reservations import get_reservation
from granular.domain.energy import MaxEnergyPolicy
from granular.domain.windows import Frequency
from granular.paths import project_root
from granular.services.examples import load_examples
from granular.services.metrics import Metrics

FLEET = project_root() / "examples" / "fleet.json"
NOW = datetime(2026, 6, 15, 12, 34, 56, tzinfo=UTC)


def test_the_fleet_loads_once_with_every_read_accepted(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    loaded = load_examples(
        sessions=sessions, fleet_path=FLEET, var_dir=tmp_path, policy=MaxEnergyPolicy(), now=NOW
    )
    assert loaded is not None
    assert set(loaded.devices) == {"example-solar-1", "example-wind-1", "example-site-1"}
    assert set(loaded.keys) == {"owner", "buyer"}
    # 7 days of hours: history 168 reads; delta and aggregate 168 + their baseline read.
    assert loaded.reads_accepted == 168 + 169 + 169
    with sessions() as session:
        reservation = get_reservation(session=session, reservation_id=loaded.reservation_id)
    assert reservation is not None
    assert Frequency(reservation.frequency) is Frequency.HOURLY
    assert reservation.start == datetime(2026, 6, 8, 12, tzinfo=UTC)
    assert reservation.end - reservation.start == timedelta(days=8)
    marker = tmp_path / "examples.json"
    assert stat.S_IMODE(marker.stat().st_mode) == 0o600
    assert json.loads(marker.read_text())["apiKeys"] == loaded.keys
    again = load_examples(
        sessions=sessions, fleet_path=FLEET, var_dir=tmp_path, policy=MaxEnergyPolicy(), now=NOW
    )
    assert again is None
    text = Metrics(sessions=sessions).exposition().decode()
    accepted = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "granular_reads"
    }
    assert accepted == {"accepted": 506, "not_accepted": 0}
