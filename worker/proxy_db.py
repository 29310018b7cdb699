"""The proxy's own PostgreSQL (LITELLM_DATABASE_URL), read-only: the direct source of spend rows
(worker.spend.direct) and of keys for reconcile (worker.credits.key_sources)."""

from __future__ import annotations

import os

import psycopg

from worker.proxy import TransientProxyError
from worker.settings import get_settings

_conn: tuple[int, psycopg.Connection] | None = None


def connection() -> psycopg.Connection:
    """One autocommit, read-only connection per process (a forked child opens its own)."""
    global _conn
    if _conn is None or _conn[0] != os.getpid() or _conn[1].closed:
        url = (get_settings().litellm_database_url or "").replace("postgresql+psycopg://", "postgresql://")
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        conn.execute("SET default_transaction_read_only = on")
        _conn = (os.getpid(), conn)
    return _conn[1]


def reset() -> None:
    """Close this process's connection (the next call opens one to the URL set by then)."""
    global _conn
    if _conn is not None and _conn[0] == os.getpid():
        _conn[1].close()
    _conn = None


def execute(query: str, params: tuple = ()) -> list[tuple]:
    """All rows of one statement. The database being unreachable or restarting is a transient
    fault like the proxy's API being down: TransientProxyError (the task retries with backoff),
    never a dead letter; the broken connection is dropped so the retry opens a new one."""
    try:
        return connection().execute(query, params).fetchall()
    except psycopg.OperationalError as exc:
        reset_quietly()
        raise TransientProxyError("proxy database", f"{type(exc).__name__}: {str(exc).strip()[:300]}") from None


def reset_quietly() -> None:
    try:
        reset()
    except Exception:  # noqa: BLE001 - closing a broken connection may fail too; it is dropped either way
        global _conn
        _conn = None
