"""Sender leases: exactly one sender per signing key at a time (DESIGN.md §6).

On PostgreSQL a session advisory lock held on a connection of its own, released by the
server when that connection ends; elsewhere (SQLite, a single process) a lease row with an
expiry, renewed every round.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import NullPool

from granular.adapters.db import outbox as db
from granular.adapters.db.engine import session_factory


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


class Lease(Protocol):
    name: str

    def acquire(self) -> bool:
        """Take or renew; False while another sender holds it."""
        ...

    def release(self) -> None: ...


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock from a lease name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class AdvisoryLockLease:
    """PostgreSQL session advisory lock on a connection kept for the sender's life.

    The server releases it when the connection ends, so a killed sender frees it at once.
    """

    def __init__(self, engine: Engine, name: str) -> None:
        self.name = name
        self.key = advisory_key(name)
        # A connection of its own, never pooled: closing it (or losing the sender) ends the
        # server session, and the lock with it; a pooled one would keep the lock alive.
        self._engine = create_engine(engine.url, poolclass=NullPool)
        self._connection: Connection | None = None

    def acquire(self) -> bool:
        if self._connection is not None:
            try:
                db.connection_alive(connection=self._connection)
                self._connection.commit()
                return True
            except DBAPIError:
                self._discard()
        connection = self._engine.connect()
        try:
            locked = db.try_advisory_lock(connection=connection, key=self.key)
            connection.commit()
        except BaseException:
            connection.close()
            raise
        if not locked:
            connection.close()
            return False
        self._connection = connection
        return True

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            db.advisory_unlock(connection=connection, key=self.key)
            connection.commit()
        except DBAPIError:
            pass  # the connection is gone, and the lock with it
        finally:
            connection.close()

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.invalidate()
                connection.close()
            except DBAPIError:
                pass


def _local_holder_is_dead(holder: str) -> bool:
    """A holder `host:pid:token` on this host whose process no longer exists."""
    parts = holder.rsplit(":", 2)
    if len(parts) != 3:
        return False
    host, pid_text, _ = parts
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class RowLease:
    """A lease row with an expiry, renewed every round. Works on any database.

    A holder that is a dead process of this host is taken over at once; any other holder
    only once its lease has expired (`lease_ttl_s` without renewal).
    """

    def __init__(
        self, engine: Engine, name: str, *, ttl_s: float, clock: Callable[[], float]
    ) -> None:
        self.name = name
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._sessions = session_factory(engine)
        self._ttl = timedelta(seconds=ttl_s)
        self._clock = clock

    def acquire(self) -> bool:
        now = _utc(self._clock())
        try:
            with self._sessions.begin() as session:
                return db.acquire_lease_row(
                    session=session,
                    name=self.name,
                    holder=self.holder,
                    now=now,
                    expires_at=now + self._ttl,
                    may_take_over=_local_holder_is_dead,
                )
        except IntegrityError:
            return False  # another sender inserted the row first

    def release(self) -> None:
        with self._sessions.begin() as session:
            db.release_lease_row(session=session, name=self.name, holder=self.holder)


def make_lease(engine: Engine, name: str, *, ttl_s: float, clock: Callable[[], float]) -> Lease:
    """An advisory lock on PostgreSQL, a lease row elsewhere."""
    if engine.dialect.name == "postgresql":
        return AdvisoryLockLease(engine, name)
    return RowLease(engine, name, ttl_s=ttl_s, clock=clock)


# --- the sender ---------------------------------------------------------------------------
