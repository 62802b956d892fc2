"""/healthz (JSON, 503 when unhealthy) and /metrics (Prometheus text); no API key needed."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from granular.services.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["operations"])


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


@router.get("/healthz", summary="Database reachable and, in `granular run`, the scheduler up")
async def healthz(request: Request) -> JSONResponse:
    health = await run_in_threadpool(_metrics(request).health)
    return JSONResponse(health.as_json(), status_code=200 if health.ok else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(_metrics(request).exposition)
    return Response(content=body, media_type=CONTENT_TYPE)
