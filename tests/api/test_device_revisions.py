"""GET /devices/{deviceId}/revisions: the parameters in force at each moment, and the
revision each meter-read submission was validated with."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.accounts import ApiKeyRow, OrganizationRow
from granular.adapters.db.devices import DeviceRevisionRow
from granular.adapters.db.engine import make_engine
from granular.adapters.db.migrate import upgrade
from granular.adapters.db.readings import ReadSubmissionRow
from tests.api.conftest import NOW, Clock, Keys
from tests.api.test_devices import HEADER, csv_upload, device
from tests.databases import BACKENDS, postgres_database

LATER = NOW + timedelta(hours=3)


def create(client: TestClient, keys: Keys, **overrides: Any) -> int:
    response = client.post("/devices", headers=keys.owner, json=device(**overrides))
    assert response.status_code == 201, response.text
    device_id: int = response.json()["device"]["id"]
    return device_id


def revisions(client: TestClient, headers: dict[str, str], device_id: int) -> list[Any]:
    response = client.get(f"/devices/{device_id}/revisions", headers=headers)
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()["revisions"]
    return found


def key_id_of(sessions: sessionmaker[Session], organization: str) -> int:
    with sessions() as session:
        found = session.scalar(
            select(ApiKeyRow.id)
            .join(OrganizationRow, OrganizationRow.id == ApiKeyRow.organization_id)
            .where(OrganizationRow.name == organization)
        )
    assert found is not None
    return found


def test_a_create_writes_revision_1_with_the_fields_of_get_devices(
    client: TestClient, keys: Keys, sessions: sessionmaker[Session]
) -> None:
    device_id = create(client, keys)
    (listed,) = client.get("/devices", headers=keys.owner).json()["devices"]
    (first,) = revisions(client, keys.owner, device_id)
    assert first == {**listed, "revision": 1, "validFrom": "2026-06-15T12:00:00+00:00"}
    with sessions() as session:
        written_by = session.scalar(select(DeviceRevisionRow.api_key_id))
    assert written_by == key_id_of(sessions, "Solar Co")


def test_an_unchanged_post_writes_no_revision(client: TestClient, keys: Keys) -> None:
    device_id = create(client, keys)
    again = client.post("/devices", headers=keys.owner, json=device())
    assert again.json()["status"] == "unchanged"
    assert [r["revision"] for r in revisions(client, keys.owner, device_id)] == [1]


def test_an_update_adds_revision_2_and_keeps_revision_1_as_it_was(
    client: TestClient, keys: Keys, clock: Clock
) -> None:
    device_id = create(client, keys)
    (before,) = revisions(client, keys.owner, device_id)
    clock.now = LATER
    changed = client.post("/devices", headers=keys.owner, json=device(capacity=60_000))
    assert changed.json()["status"] == "updated"
    first, second = revisions(client, keys.owner, device_id)
    assert first == before
    assert (first["capacity"], first["validFrom"]) == (50_000, "2026-06-15T12:00:00+00:00")
    assert (second["revision"], second["capacity"]) == (2, 60_000)
    assert second["validFrom"] == "2026-06-15T15:00:00+00:00"
    assert {k: v for k, v in second.items() if k not in ("capacity", "revision", "validFrom")} == {
        k: v for k, v in first.items() if k not in ("capacity", "revision", "validFrom")
    }


def test_an_issuer_update_records_the_issuer_key(
    client: TestClient, keys: Keys, sessions: sessionmaker[Session]
) -> None:
    response = client.post("/devices", headers=keys.issuer, json=device())
    assert response.status_code == 201, response.text
    with sessions() as session:
        written_by = session.scalar(select(DeviceRevisionRow.api_key_id))
    assert written_by == key_id_of(sessions, "Registry")


def test_a_csv_upload_writes_one_revision_per_device_and_its_repeat_none(
    client: TestClient, keys: Keys, clock: Clock
) -> None:
    rows = [
        "s-1,P,KEN,ES100,TC110,5000,2023-01-01,true,School,1500,-1.2,36.8",
        "s-2,P,NGA,ES100,TC110,7000,2023-01-01T00:00:00Z,no,Residential,1500.0000,,",
    ]
    text = "\n".join([HEADER, *rows, ""])
    assert csv_upload(client, keys.owner, text).json()["summary"]["created"] == 2
    ids = [d["id"] for d in client.get("/devices", headers=keys.owner).json()["devices"]]
    clock.now = LATER
    again = csv_upload(client, keys.owner, text).json()
    assert again["summary"] == {"created": 0, "updated": 0, "unchanged": 2, "rejected": 0}
    for device_id in ids:
        assert [r["revision"] for r in revisions(client, keys.owner, device_id)] == [1]
    changed = text.replace(",5000,", ",5500,")
    assert csv_upload(client, keys.owner, changed).json()["summary"]["updated"] == 1
    assert [r["capacity"] for r in revisions(client, keys.owner, ids[0])] == [5000, 5500]
    assert [r["revision"] for r in revisions(client, keys.owner, ids[1])] == [1]


def test_a_submission_points_at_the_revision_it_was_validated_with(
    client: TestClient, keys: Keys, clock: Clock, sessions: sessionmaker[Session]
) -> None:
    device_id = create(client, keys)

    def submit(end: str) -> int:
        body = {"type": "delta", "reads": [{"endtimestamp": end, "value": 0}]}
        response = client.post("/meter-reads/site-1", headers=keys.owner, json=body)
        assert response.status_code == 200, response.text
        submission_id: int = response.json()["submissionId"]
        return submission_id

    before = submit("2026-06-01T00:00:00Z")
    clock.now = LATER
    updated = client.post("/devices", headers=keys.owner, json=device(capacity=60_000))
    assert updated.json()["status"] == "updated"
    after = submit("2026-06-01T01:00:00Z")
    with sessions() as session:
        numbered = select(DeviceRevisionRow.revision, DeviceRevisionRow.id).where(
            DeviceRevisionRow.device_id == device_id
        )
        by_number = dict(session.execute(numbered).tuples().all())
        used = {
            submission.id: submission.device_revision_id
            for submission in session.scalars(select(ReadSubmissionRow))
        }
        # What an auditor runs: the capacity a submission was validated with.
        capacity = session.scalar(
            select(DeviceRevisionRow.capacity_w)
            .join(ReadSubmissionRow, ReadSubmissionRow.device_revision_id == DeviceRevisionRow.id)
            .where(ReadSubmissionRow.id == after)
        )
    assert set(by_number) == {1, 2}
    assert used == {before: by_number[1], after: by_number[2]}
    assert capacity == 60_000


@pytest.mark.parametrize("role", ["owner", "issuer", "viewer", "buyer"])
def test_the_owner_and_every_other_role_read_the_revisions(
    client: TestClient, keys: Keys, role: str
) -> None:
    device_id = create(client, keys)
    assert len(revisions(client, getattr(keys, role), device_id)) == 1


def test_an_owner_of_another_organization_is_told_not_found(client: TestClient, keys: Keys) -> None:
    device_id = create(client, keys)
    response = client.get(f"/devices/{device_id}/revisions", headers=keys.other_owner)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
    unknown = client.get(f"/devices/{device_id + 1}/revisions", headers=keys.issuer)
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    "device_id", ["0", "2147483648", "abc"], ids=["zero", "over-int32", "not-a-number"]
)
def test_a_device_id_the_column_cannot_hold_is_refused(
    client: TestClient, keys: Keys, device_id: str
) -> None:
    response = client.get(f"/devices/{device_id}/revisions", headers=keys.issuer)
    assert response.status_code == 422, response.text


@contextmanager
def engine_at_0005(backend: str, tmp_dir: Path) -> Iterator[Engine]:
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_dir / 'granular.db'}")
        upgrade(engine, "0005")
        yield engine
        engine.dispose()
        return
    with postgres_database() as url:
        engine = make_engine(url)
        upgrade(engine, "0005")
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_migration_0006_gives_existing_devices_revision_1(backend: str, tmp_path: Path) -> None:
    written = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    with engine_at_0005(backend, tmp_path) as engine:
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO organizations (id, name, created_at) VALUES (1, 'Old', :at)"),
                {"at": written},
            )
            connection.execute(
                text(
                    "INSERT INTO devices (id, organization_id, external_id, country_code, "
                    "fuel_code, device_type_code, capacity_w, commissioning_date, "
                    "grid_interconnection, off_taker, yield_kwh_per_kw_year, created_at, "
                    "updated_at) VALUES (7, 1, 'old-1', 'KEN', 'ES100', 'TC110', 5000, :at, "
                    ":grid, 'School', 1500.5, :at, :at)"
                ),
                {"at": written, "grid": True},
            )
        upgrade(engine)
        with Session(engine) as session:
            (row,) = session.scalars(select(DeviceRevisionRow)).all()
    assert (row.device_id, row.revision, row.api_key_id) == (7, 1, None)
    assert (row.external_id, row.capacity_w, row.grid_interconnection) == ("old-1", 5000, True)
    assert Decimal(row.yield_kwh_per_kw_year) == Decimal("1500.5")
    valid_from = row.valid_from
    assert (valid_from if valid_from.tzinfo else valid_from.replace(tzinfo=UTC)) == written
