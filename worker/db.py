"""One engine per process, one session per unit of work, and the advisory locks of periodic jobs."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.orm import Session, sessionmaker

from worker.settings import get_settings

_engine: Engine | None = None
_engine_pid: int | None = None
_sessions: sessionmaker[Session] | None = None
# A pooled connection idle longer than this is pinged before it is handed out. One used moments
# ago is not: a ping on every checkout was a round trip per unit of work, four per payment. If
# the server went away in between, the statement fails, SQLAlchemy invalidates the pool, and the
# task retries (worker.delivery.policy treats an invalidated connection as transient).
PING_IF_IDLE_S = 2.0


def engine() -> Engine:
    """The process's engine; a forked child builds its own instead of sharing sockets."""
    global _engine, _engine_pid, _sessions
    if _engine is None or _engine_pid != os.getpid():
        _engine = create_engine(
            get_settings().database_url,
            pool_size=5,
            max_overflow=5,
            connect_args={"connect_timeout": 5},
        )
        event.listen(_engine, "checkin", _checked_in)
        event.listen(_engine, "checkout", _ping_if_idle)
        _engine_pid = os.getpid()
        _sessions = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def _checked_in(dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    if time.monotonic() - record.info.get("idle_since", 0.0) < PING_IF_IDLE_S:
        return
    try:
        assert _engine is not None
        _engine.dialect.do_ping(dbapi_connection)  # what pool_pre_ping does, outside any transaction
    except Exception as error:  # noqa: BLE001 - any failure means this connection is unusable
        # The pool discards the connection and checks out (or opens) another one.
        raise exc.DisconnectionError() from error


def dispose_engine() -> None:
    global _engine, _sessions
    if _engine is not None:
        _engine.dispose()
    _engine = None
    _sessions = None


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits when the block ends and rolls back if it raises."""
    engine()
    assert _sessions is not None
    with _sessions() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


class Lock(IntEnum):
    """Advisory lock ids: fixed constants, so every process of every version agrees on them."""

    SPEND_SYNC = 0x5E4D
    RECONCILE = 0x5EC0
    CREDIT_EXPIRY = 0x5E7A
    SPEND_RETENTION = 0x5E7D


@contextmanager
def exclusive(lock: Lock) -> Iterator[bool]:
    """Yields whether this process got the lock; held until the block ends. The beat's jobs and
    the CLI's runs of them take it, so two runs (a slow pass overlapping the next beat, an
    operator's run beside the beat's) never work at once.

    A session-level lock on a connection of its own, outside any transaction: a job commits as it
    goes, and must not hold a transaction open across its HTTP calls. If the process dies,
    PostgreSQL drops the connection and the lock with it."""
    conn = engine().connect()
    held = False
    try:
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": int(lock)}).scalar())
        conn.commit()  # the lock outlives the transaction; the connection must not idle inside one
        yield held
    finally:
        try:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": int(lock)})
                conn.commit()
        except Exception:
            # Never hand a connection that may still hold the lock back to the pool.
            conn.invalidate()
        conn.close()
