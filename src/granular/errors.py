"""The root of every error granular raises on purpose.

Leaves are named after the rule they enforce and are built from fields, so the
message names the field, the value and the rule. The API maps classes to HTTP
statuses in one table; nothing catches broad exceptions below a job or request
boundary.
"""

from __future__ import annotations

from collections.abc import Mapping


class GranularError(Exception):
    """Root of granular's own errors. `code` is stable and machine-readable; `details`
    holds the offending field, value and rule as a flat mapping, so the API renders it
    without parsing the message."""

    code: str = "granular_error"

    def __init__(self, message: str, details: Mapping[str, object] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, object] = dict(details or {})


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
