"""spend_logs kept for a bounded time: storage stays flat however long the worker runs.

A stored row is what dedupes a re-read of its window, and verification compares windows' counts with
the rows stored, so rows are kept while their window can still be read or verified: SPEND_VERIFY_S,
plus a margin, SPEND_LOGS_KEEP_DAYS in all (never less than SPEND_VERIFY_S plus a day), counted back
from the spend cursor. A row of a key that is not ours is only ever counted, so it goes once its
window is past verification: SPEND_VERIFY_S, a window and FOREIGN_MARGIN. Older rows are deleted in bounded
batches by `spend.retention` (beat, every 10 minutes, under its own lock). The ledger keeps every
usage entry and spend_daily (daily_usage) every day: neither is read from spend_logs. A row older
than the cutoff that is read again anyway (a backfill by hand, a key's repair) is not stored again:
its ledger entry, keyed by request_id, still makes its debit happen once (worker.spend.ingest).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from worker.db import Lock, exclusive, session_scope
from worker.settings import get_settings

log = logging.getLogger(__name__)
BATCH = 5000  # rows a transaction: locks and WAL stay small, the proxy's readers never wait long
# A run deletes batches for at most this long, then leaves the rest to the next run (every 10
# minutes): a worker slot is never held for long, and a busy proxy's hour of rows (10.8M at 3,000
# requests/s) is still deleted within the hour.
BUDGET_S = 120
# Verification reaches windows ending after now - SPEND_VERIFY_S, which start up to a window's
# length before that, and the cursor is never ahead of now: a window and an hour more keep every
# counted row that a verification can still compare.
FOREIGN_MARGIN = timedelta(hours=1)


def keep() -> timedelta:
    s = get_settings()
    return max(timedelta(days=s.spend_logs_keep_days), timedelta(seconds=s.spend_verify_s) + timedelta(days=1))


def keep_foreign() -> timedelta:
    s = get_settings()
    return timedelta(seconds=s.spend_verify_s + s.spend_window_s) + FOREIGN_MARGIN


def kept_from(session: Session, kept: timedelta | None = None) -> datetime | None:
    """Rows whose startTime is before this are not kept: `kept` (default keep()) before the spend
    cursor (not the clock, so that what the job deleted is exactly what a later read will not store
    again, the cursor only moving forward); None before the first sync run."""
    position = session.execute(text("SELECT position FROM spend_sync_cursor")).scalar()
    return position - (kept or keep()) if position is not None else None


def delete_old(batch: int = BATCH) -> int | None:
    """Delete spend_logs rows older than kept_from(); returns how many, None when another run holds the lock."""
    deleted = 0
    with exclusive(Lock.SPEND_RETENTION) as mine:
        if not mine:
            log.info("spend retention skipped: another run holds its lock")
            return None
        with session_scope() as session:
            cutoff, foreign_cutoff = kept_from(session), kept_from(session, keep_foreign())
        if cutoff is None:
            return 0
        ends = time.monotonic() + BUDGET_S
        # Every row before the cutoff, then the rows of keys not ours (user_id NULL, found on the
        # (user_id, start_time) index) before theirs.
        for rows, before in (("TRUE", cutoff), ("user_id IS NULL", foreign_cutoff)):
            deleted += _delete(rows, before, batch, ends)
    if deleted:
        log.info("spend retention: %d spend_logs rows deleted, ours from before %s", deleted, cutoff.isoformat())
    return deleted


def _delete(rows: str, before: datetime, batch: int, ends: float) -> int:
    deleted = 0
    while time.monotonic() < ends:
        with session_scope() as session:
            n = session.execute(
                text("DELETE FROM spend_logs WHERE ctid = ANY(ARRAY("
                     f"SELECT ctid FROM spend_logs WHERE {rows} AND start_time < :t LIMIT :n))"),
                {"t": before, "n": batch},
            ).rowcount
        deleted += n
        if n < batch:
            break
    return deleted
