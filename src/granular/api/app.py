"""The FastAPI application: built from its dependencies, no globals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from granular import __version__
from granular.api import docs, errors
from granular.api.exact_json import SafeJSONResponse
from granular.api.limits import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from granular.api.routers import (
    codes,
    device_groups,
    devices,
    health,
    meter_reads,
    registry,
    registry_commands,
    reports,
    reservations,
)
from granular.api.schemas_fleet import CHAIN_ERROR_RESPONSES, ERROR_RESPONSES
from granular.domain.energy import MaxEnergyPolicy
from granular.services.metrics import Metrics


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    *,
    sessions: sessionmaker[Session],
    clock: Callable[[], datetime] = utc_now,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_energy_policy: MaxEnergyPolicy | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    app = FastAPI(
        title="granular",
        version=__version__,
        default_response_class=SafeJSONResponse,
        docs_url=None,  # api.docs serves it with local assets
        redoc_url=None,  # ReDoc too would come from a CDN
    )
    app.state.sessions = sessions
    app.state.clock = clock
    app.state.max_energy_policy = max_energy_policy or MaxEnergyPolicy()
    # /healthz and /metrics; `granular run` passes the daemon's, which counts its jobs.
    app.state.metrics = metrics or Metrics(sessions=sessions)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    errors.install(app)
    docs.install(app)
    app.include_router(devices.router, responses=ERROR_RESPONSES)
    app.include_router(reservations.router, responses=ERROR_RESPONSES)
    app.include_router(meter_reads.router, responses=ERROR_RESPONSES)
    app.include_router(device_groups.router, responses=ERROR_RESPONSES)
    app.include_router(codes.router, responses=ERROR_RESPONSES)
    app.include_router(registry.router, responses=ERROR_RESPONSES)
    app.include_router(registry_commands.router, responses=CHAIN_ERROR_RESPONSES)
    app.include_router(reports.router, responses=ERROR_RESPONSES)
    app.include_router(health.router)
    return app
