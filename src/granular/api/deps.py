"""Request-scoped dependencies: the caller, the session factory and the clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from granular.services.accounts import Principal, authenticate
from granular.services.accounts import require_role as require_role  # its one home

__all__ = ["Caller", "Now", "Sessions", "get_now", "get_principal", "get_sessions", "require_role"]


def get_sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def get_now(request: Request) -> datetime:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


# Declares the HTTP bearer scheme in OpenAPI (the Authorize button of /docs). It does not
# check anything: `authenticate` reads the raw header, so its messages stay the same.
_bearer = HTTPBearer(auto_error=False, description="an API key: `Bearer gk_...`")


def get_principal(
    request: Request,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    return authenticate(sessions=request.app.state.sessions, authorization=authorization)


Sessions = Annotated[sessionmaker[Session], Depends(get_sessions)]
Now = Annotated[datetime, Depends(get_now)]
Caller = Annotated[Principal, Depends(get_principal)]
