"""Every error leaves the API in one JSON shape with a stable code:

    {"error": {"code": "device_field_invalid", "message": "...", "details": {...}}}

`details` is always there and always an object: the rule's fields (`field`, `value`, the
numbers), `{"problems": [...]}` for a request that does not fit its schema, `{}` when there
is nothing more to say.

The status comes from one table of error classes; nothing else maps errors to statuses.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from granular.api.exact_json import SafeJSONResponse
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


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def status_of(error: GranularError) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return status
    return 400


def describe(error: GranularError) -> dict[str, Any]:
    """The `error` object for a domain error: its code, message and field details."""
    jsonable = _jsonable(error.details)
    described: dict[str, Any] = error_body(error.code, str(error), jsonable)["error"]
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
    async def granular_error(_: Request, error: GranularError) -> SafeJSONResponse:
        return SafeJSONResponse({"error": describe(error)}, status_code=status_of(error))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> SafeJSONResponse:
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
            body = error_body(
                "malformed_json", "the request body is not valid JSON", {"problems": problems}
            )
            return SafeJSONResponse(body, status_code=400)
        first = problems[0] if problems else {"field": "body", "problem": "invalid"}
        message = f"{first['field']}: {first['problem']}"
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more)"
        body = error_body("invalid_request", message, {"problems": problems})
        return SafeJSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> SafeJSONResponse:
        if isinstance(error.__cause__, BodyTooLarge):  # a streamed body went over the limit
            return SafeJSONResponse(
                error_body("payload_too_large", "the request body exceeds the size limit"),
                status_code=413,
            )
        code = _HTTP_CODES.get(error.status_code, f"http_{error.status_code}")
        return SafeJSONResponse(
            error_body(code, str(error.detail)),
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> SafeJSONResponse:
        # The request boundary: log the class, never echo internals to the caller.
        logging.getLogger("granular.api").exception("unexpected error: %s", type(error).__name__)
        return SafeJSONResponse(
            error_body("internal_error", "an unexpected error occurred; it has been logged"),
            status_code=500,
        )
