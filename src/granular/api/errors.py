"""Every error leaves the API in one JSON shape with a stable code:

    {"error": {"code": "device_field_invalid", "message": "...", "details": {...}}}

`details` is always there and always an object: the rule's fields (`field`, `value`, the
numbers), `{"problems": [...]}` for a request that does not fit its schema, `{}` when there
is nothing more to say.

Every key of `details` is camelCase on the wire, and so is the request field named by
`details.field`. Python code builds `details` with the snake_case names of its own
variables (`energy_wh`, `window_start`); `describe` is the one place that converts them,
so no error class has to know the wire format and a new error cannot leak snake_case.
Names that are already camelCase (`externalId`, `SDGBenefits`, `certificateID`) pass
through unchanged.

The status comes from one table of error classes; nothing else maps errors to statuses.
A 503 (the chain's RPC node did not answer) carries `Retry-After` and is logged as one
warning line: the error's message names the RPC host only, never its URL.
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
    ChainUnavailable,
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
    (ChainUnavailable, 503),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (ValidationError, 422),
    (ConfigurationError, 500),
    (GranularError, 400),
)

# How long a client should wait before asking again when the chain did not answer: a node
# restart or a provider's rate-limit window, not a reason to hammer it.
RETRY_AFTER_S = 10

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


def camel(name: str) -> str:
    """`energy_wh` -> `energyWh`; a name without `_` (`externalId`, `SDGBenefits`) is kept."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def describe(error: GranularError) -> dict[str, Any]:
    """The `error` object for a domain error: its code, message and field details, with
    camelCase keys and a camelCase `field`."""
    details = jsonable(error.details)
    described: dict[str, Any] = error_body(error.code, str(error), details)["error"]
    return described


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            camel(str(k)): camel(v) if k == "field" and isinstance(v, str) else jsonable(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _problem(item: Any) -> dict[str, Any]:
    """One schema problem. `field` is the request field's path (`reads.0.value`); for JSON
    that does not parse, pydantic's `loc` holds a character offset: that is `position`,
    and the field is the whole `body`."""
    loc = tuple(item.get("loc", ()))
    if item.get("type") == "json_invalid":
        offsets = [part for part in loc if isinstance(part, int)]
        problem: dict[str, Any] = {"field": "body"}
        if offsets:
            problem["position"] = offsets[-1]
    else:
        problem = {"field": ".".join(str(part) for part in loc if part != "body") or "body"}
    problem.update(problem=item.get("msg", ""), type=item.get("type", ""))
    return problem


def install(app: FastAPI) -> None:
    @app.exception_handler(GranularError)
    async def granular_error(request: Request, error: GranularError) -> SafeJSONResponse:
        status = status_of(error)
        headers = None
        if status == 503:
            headers = {"Retry-After": str(RETRY_AFTER_S)}
            logging.getLogger("granular.api").warning(
                "%s %s answered 503: %s", request.method, request.url.path, error
            )
        return SafeJSONResponse({"error": describe(error)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> SafeJSONResponse:
        problems = [_problem(item) for item in error.errors()]
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
