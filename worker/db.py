"""One engine per process, one session per unit of work, and advisory locks."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def try_advisory_xact_lock(session: Session, lock_id: int) -> bool:
    """Held until the session's transaction ends; False at once if someone else holds it."""
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": lock_id}).scalar())
