"""The API over a real database (SQLite and PostgreSQL), with one key per role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from granular.api.app import create_app
from granular.services.accounts import create_api_key

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Keys:
    issuer: dict[str, str]
    owner: dict[str, str]  # device owner of "Solar Co"
    other_owner: dict[str, str]  # device owner of "Other Solar"
    buyer: dict[str, str]
    other_buyer: dict[str, str]
    viewer: dict[str, str]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(sessions: sessionmaker[Session], clock: Clock) -> Iterator[TestClient]:
    app = create_app(sessions=sessions, clock=clock, max_body_bytes=2_000_000)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def keys(sessions: sessionmaker[Session]) -> Keys:
    def key(organization: str, role: str) -> dict[str, str]:
        created = create_api_key(
            sessions=sessions, organization=organization, role=role, label=None, now=NOW
        )
        return {"Authorization": f"Bearer {created.key}"}

    return Keys(
        issuer=key("Registry", "issuer"),
        owner=key("Solar Co", "device_owner"),
        other_owner=key("Other Solar", "device_owner"),
        buyer=key("Buyer Ltd", "buyer"),
        other_buyer=key("Other Buyer", "buyer"),
        viewer=key("Auditor", "viewer"),
    )
