"""Every error leaves the API in one JSON shape with a stable code:

    {"error": {"code": "device_field_invalid", "message": "...", "details": {...}}}

The status comes from one table of error classes; nothing else maps errors to statuses.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from granular.api.limits import BodyTooLarge
from granular.errors import (
    ConfigurationError,
    Conflict,
    Forbidden,
    GranularError,
    NotFound,
    Unauthenticated,
    ValidationError,
)

# First match wins: most specific first.
STATUS_BY_ERROR: tuple[tuple[type[GranularError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (ValidationError, 422),
    (ConfigurationError, 500),
    (GranularError, 400),
)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def status_of(error: GranularError) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return status
    return 400


def describe(error: GranularError) -> dict[str, Any]:
    """The `error` object for a domain error: its code, message and field details."""
    details = getattr(error, "details", None)
    described: dict[str, Any] = error_body(
        error.code, str(error), _jsonable(details) if details else None
    )["error"]
    return described


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def install(app: FastAPI) -> None:
    @app.exception_handler(GranularError)
    async def granular_error(_: Request, error: GranularError) -> JSONResponse:
        return JSONResponse({"error": describe(error)}, status_code=status_of(error))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "field": ".".join(str(part) for part in item.get("loc", ()) if part != "body")
                or "body",
                "problem": item.get("msg", ""),
                "type": item.get("type", ""),
            }
            for item in error.errors()
        ]
        if any(p["type"] == "json_invalid" for p in problems):
            body = error_body("malformed_json", "the request body is not valid JSON", problems)
            return JSONResponse(body, status_code=400)
        first = problems[0] if problems else {"field": "body", "problem": "invalid"}
        message = f"{first['field']}: {first['problem']}"
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more)"
        return JSONResponse(error_body("invalid_request", message, problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        if isinstance(error.__cause__, BodyTooLarge):  # a streamed body went over the limit
            return JSONResponse(
                error_body("payload_too_large", "the request body exceeds the size limit"),
                status_code=413,
            )
        code = _HTTP_CODES.get(error.status_code, f"http_{error.status_code}")
        return JSONResponse(
            error_body(code, str(error.detail)),
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        # The request boundary: log the class, never echo internals to the caller.
        logging.getLogger("granular.api").exception("unexpected error: %s", type(error).__name__)
        return JSONResponse(
            error_body("internal_error", "an unexpected error occurred; it has been logged"),
            status_code=500,
        )
