"""API keys: created by the operator's CLI, shown once, stored as a sha256 hash."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.accounts import (
    Principal as Principal,  # the caller, re-exported: routers import services only
)
from granular.adapters.db.accounts import (
    add_api_key,
    get_or_create_organization,
    principal_for_key_hash,
    revoke_api_key,
)
from granular.errors import Forbidden, Unauthenticated, ValidationError

KEY_PREFIX = "gk"


class Role(StrEnum):
    ISSUER = "issuer"
    DEVICE_OWNER = "device_owner"
    BUYER = "buyer"
    VIEWER = "viewer"


def require_role(principal: Principal, *roles: Role) -> None:
    """The one role check of the API and the services: `principal` holds one of `roles`,
    or Forbidden (403) naming the roles that may."""
    if principal.role not in {role.value for role in roles}:
        allowed = ", ".join(role.value for role in roles)
        raise Forbidden(f"role {principal.role!r} may not do this; it needs one of: {allowed}")


@dataclass(frozen=True, slots=True)
class NewApiKey:
    key: str  # shown once, never stored
    prefix: str
    organization: str
    role: Role


def hash_key(key: str) -> str:
    """Keys are 256-bit random tokens, so a plain sha256 cannot be brute-forced."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_api_key(
    *,
    sessions: sessionmaker[Session],
    organization: str,
    role: str,
    label: str | None,
    now: datetime,
) -> NewApiKey:
    try:
        the_role = Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise ValidationError(f"role: {role!r} is not one of {allowed}") from None
    name = organization.strip()
    if not 0 < len(name) <= 200:
        raise ValidationError(f"organization: {organization!r} must be 1-200 characters")
    if label is not None and len(label) > 200:
        raise ValidationError(f"label: {len(label)} characters; at most 200")
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    with sessions.begin() as session:
        organization_id = get_or_create_organization(session=session, name=name, now=now)
        add_api_key(
            session=session,
            organization_id=organization_id,
            role=the_role.value,
            key_hash=hash_key(key),
            prefix=prefix,
            label=label,
            now=now,
        )
    return NewApiKey(key, prefix, name, the_role)


_PREFIX = re.compile(rf"^(?:{KEY_PREFIX}_)?([0-9a-f]{{8}})(?:_.*)?$")


def key_prefix(text: str) -> str:
    """The 8 hex digits that name a key, from what the CLI printed: `de65fe95`,
    `gk_de65fe95`, or the whole key."""
    found = _PREFIX.match(text.strip())
    if found is None:
        raise ValidationError(
            f"prefix: {text!r} is not a key prefix; give the 8 hex digits after "
            f"'{KEY_PREFIX}_' (with or without '{KEY_PREFIX}_')"
        )
    return found.group(1)


def revoke(*, sessions: sessionmaker[Session], prefix: str, now: datetime) -> int:
    """Revokes the live keys named by `prefix` (see `key_prefix`); how many it revoked."""
    with sessions.begin() as session:
        return revoke_api_key(session=session, prefix=key_prefix(prefix), now=now)


def authenticate(*, sessions: sessionmaker[Session], authorization: str | None) -> Principal:
    """The principal behind an `Authorization: Bearer <key>` header."""
    if not authorization:
        raise Unauthenticated("Authorization: missing; send 'Bearer <API key>'")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthenticated("Authorization: expected 'Bearer <API key>'")
    with sessions() as session:
        principal = principal_for_key_hash(session=session, key_hash=hash_key(key.strip()))
    if principal is None:
        raise Unauthenticated("Authorization: unknown or revoked API key")
    return principal
