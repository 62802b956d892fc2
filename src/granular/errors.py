"""The root of every error granular raises on purpose.

Leaves are named after the rule they enforce and are built from fields, so the
message names the field, the value and the rule. The API maps classes to HTTP
statuses in one table; nothing catches broad exceptions below a job or request
boundary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar
from urllib.parse import urlsplit


class GranularError(Exception):
    """Root of granular's own errors. `code` is stable and machine-readable; `details`
    holds the offending field, value and rule as a flat mapping, so the API renders it
    without parsing the message."""

    code: str = "granular_error"

    def __init__(self, message: str, details: Mapping[str, object] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, object] = dict(details or {})


class FieldRuleError(GranularError):
    """The one base of the errors built from (field, value, rule): the field that broke the
    rule, the value it had and the rule in words. A leaf sets `code`, mixes in the kind
    that picks its HTTP status (`ValidationError`, `ConfigurationError`, ...) and, at most,
    a `subject` for its message or a message of its own:

        class FeePolicyInvalid(FieldRuleError, ConfigurationError):
            code = "fee_policy_invalid"
            subject = "fee policy "

    `details` holds `field`, `value` (as given when JSON can carry it, else its text) and
    `rule`, plus any extra values the leaf passes."""

    subject: ClassVar[str] = ""

    def __init__(
        self,
        field: str,
        value: object,
        rule: str,
        *,
        message: str | None = None,
        **extra: object,
    ) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(
            message or f"{self.subject}{field}={value!r} breaks the rule: {rule}",
            {"field": field, "value": _plain(value), "rule": rule, **extra},
        )


def _plain(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    return str(value)


class ConfigurationError(GranularError):
    code = "configuration_error"


class ValidationError(GranularError):
    """Input broke a rule. Subclasses name the rule."""

    code = "validation_error"


class NotFound(GranularError):
    code = "not_found"


class Conflict(GranularError):
    code = "conflict"


class Unauthenticated(GranularError):
    code = "unauthenticated"


class Forbidden(GranularError):
    code = "forbidden"


class ChainUnavailable(GranularError):
    """The chain's RPC node could not be asked: connection refused, a timeout, an HTTP
    error, or a node that answered it cannot serve the call. Raised by adapters/chain in
    place of the transport's own exception, whose text repeats the URL with any API key
    in it: the message and `details.rpc` name the scheme, host and port only
    (`redact_url`), `details.reason` the failure's kind. The API answers 503 with
    Retry-After; the daemon's jobs back off and try again."""

    code = "chain_unavailable"

    def __init__(self, url: str, reason: str) -> None:
        self.rpc = redact_url(url)
        self.reason = reason
        super().__init__(
            f"RPC {self.rpc} is unreachable: {reason}", {"rpc": self.rpc, "reason": reason}
        )


def redact_url(url: str) -> str:
    """Scheme, host and port only: RPC URLs often carry an API key in the user info, the
    path or the query (`https://user:key@host/v3/key?apikey=key` -> `https://host`)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number: say nothing of the rest either
        return "?"
    host = parts.hostname or "?"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme or '?'}://{host}{f':{port}' if port else ''}"
