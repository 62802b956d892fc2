"""Timestamps leave the API in UTC on both backends, whatever PostgreSQL's session zone."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.engine import session_factory
from granular.api.app import create_app
from tests.api.conftest import Clock, Keys
from tests.api.test_devices import device


def test_a_non_utc_postgresql_session_does_not_leak_into_answers(
    engine: Engine, sessions: sessionmaker[Session], keys: Keys
) -> None:
    """psycopg returns timestamptz in the session's zone: a server whose TimeZone is not UTC
    made reservations answer "2026-06-30T20:00:00-04:00" where the API promises UTC."""
    if engine.dialect.name != "postgresql":
        pytest.skip("only PostgreSQL has a session time zone; SQLite stores UTC text")
    with engine.connect() as connection:  # make_engine's own sessions are in UTC
        assert connection.execute(text("SHOW TimeZone")).scalar() == "UTC"
    local = create_engine(engine.url, connect_args={"options": "-c timezone=America/New_York"})
    try:
        with local.connect() as connection:
            assert connection.execute(text("SHOW TimeZone")).scalar() == "America/New_York"
        client = TestClient(create_app(sessions=session_factory(local), clock=Clock()))
        created = client.post("/devices", headers=keys.owner, json=device("site-1"))
        assert created.status_code == 201, created.text
        body = {
            "devices": [created.json()["device"]["id"]],
            "frequency": "monthly",
            "start": "2026-07-01T00:00:00Z",
            "end": "2026-12-01T00:00:00+01:00",
            "targetVolumeWh": 1000,
            "wallet": "0x" + "ab" * 20,
        }
        assert client.post("/reservations", headers=keys.buyer, json=body).status_code == 201
        (shown,) = client.get("/reservations", headers=keys.buyer).json()["reservations"]
        assert (shown["start"], shown["end"], shown["createdAt"]) == (
            "2026-07-01T00:00:00+00:00",
            "2026-11-30T23:00:00+00:00",
            "2026-06-15T12:00:00+00:00",
        )
        assert shown["deviceHistory"][0]["addedAt"] == "2026-06-15T12:00:00+00:00"
        (listed,) = client.get("/devices", headers=keys.owner).json()["devices"]
        assert listed["commissioningDate"] == "2024-03-01T00:00:00+00:00"
        reads = {
            "type": "history",
            "reads": [
                {
                    "starttimestamp": "2026-06-01T08:00:00+02:00",
                    "endtimestamp": "2026-06-01T09:00:00+02:00",
                    "value": 1000,
                }
            ],
        }
        assert client.post("/meter-reads/site-1", headers=keys.owner, json=reads).status_code == 200
        (interval,) = client.get("/meter-reads/site-1", headers=keys.owner).json()["intervals"]
        assert interval["start"] == "2026-06-01T06:00:00+00:00"
    finally:
        local.dispose()
