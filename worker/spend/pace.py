"""How hard all spend readers together may press on the proxy's API.

The proxy answers its admin API on the same event loop that serves users' calls: a page of 5 rows
costs its processes 12-18 ms of CPU, one of 25 about 40 ms, much of it spent encoding the page's
JSON in one go (bench/results/proxy_pages.md). Unpaced, a catch-up had several pages in flight at all
times and users' p99 went from 65 ms to 1.7 s. Pages are therefore small (SPEND_PAGE_SIZE), so no
single stretch holds the loop long, and every spend-log request, from every process (readers, their
prefetch, verification, a key's repair), first takes one of SPEND_API_CONCURRENCY slots, shared
through PostgreSQL advisory locks, and keeps it after the answer for REST times as long as the
request took: each slot keeps the proxy busy at most 1 / (1 + REST) of the time, and a proxy that
slows down under its users' load slows the readers down with it. A reader that finds every slot busy
waits, and after WAIT_MOST gives up with a transient error (its task retries later).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from worker.db import engine
from worker.proxy import TransientProxyError
from worker.settings import get_settings

SLOT_LOCK_BASE = 0x5E5A00  # advisory lock ids SLOT_LOCK_BASE .. + SPEND_API_CONCURRENCY - 1
REST = 4.0  # a slot rests 4 times as long as its request took: the proxy busy 20% of the time a slot
WAIT_MOST = 60.0  # seconds a request waits for a slot; well inside a reader's lease (2 minutes)


@contextmanager
def api_slot() -> Iterator[None]:
    """Held around one spend-log request to the proxy's API."""
    conn = engine().connect()
    held = None
    try:
        held = _take(conn)
        began = time.monotonic()
        try:
            yield
        finally:
            time.sleep(REST * (time.monotonic() - began))
    finally:
        try:
            if held is not None:
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": held})
                conn.commit()
        except Exception:  # noqa: BLE001 - a connection that may still hold the lock is never reused
            conn.invalidate()
        conn.close()


def _take(conn) -> int:
    slots = [SLOT_LOCK_BASE + i for i in range(get_settings().spend_api_concurrency)]
    deadline = time.monotonic() + WAIT_MOST
    while True:
        random.shuffle(slots)
        for lock in slots:
            if conn.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": lock}).scalar():
                conn.commit()  # the lock outlives the transaction; the connection must not idle in one
                return lock
        conn.commit()
        if time.monotonic() > deadline:
            raise TransientProxyError("/spend/logs/v2", f"no spend-log request slot free for {WAIT_MOST:.0f} s "
                                      "(SPEND_API_CONCURRENCY)")
        time.sleep(random.uniform(0.05, 0.2))
