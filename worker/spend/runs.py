"""The spend sync's persisted state: its cursor, a record of every run, and a status summary.

The cursor is the end of the last window read completely. It only moves forward, and only
across a window that starts at or before it, so a backfill of a later range can never jump
over a gap that was not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from worker.models import Account, SpendSyncRun
from worker.spend.ingest import Counts
from worker.spend.windows import whole_second

# Runs are recorded every minute; a month of them is plenty to read the recent history.
KEEP_RUNS = timedelta(days=30)


@dataclass(frozen=True)
class Cursor:
    position: datetime
    origin: datetime  # where syncing began; the look-back never reaches before it


def cursor(session: Session) -> Cursor | None:
    row = session.execute(text("SELECT position, origin FROM spend_sync_cursor")).one_or_none()
    return Cursor(row.position, row.origin) if row else None


def ensure_cursor(session: Session, start: datetime | None) -> Cursor | None:
    """The cursor, created at `start` (or when the first account was created) on the first run.

    None while there is nothing to start from: no configured start and no account yet."""
    if (found := cursor(session)) is not None:
        return found
    start = start or session.execute(select(func.min(Account.created_at))).scalar()
    if start is None:
        return None
    start = whole_second(start)
    session.execute(
        text("INSERT INTO spend_sync_cursor (position, origin) VALUES (:p, :p) ON CONFLICT (id) DO NOTHING"),
        {"p": start},
    )
    return cursor(session)


def advance(session: Session, window_start: datetime, window_end: datetime) -> None:
    """Move the cursor to window_end if that window joins on to it (see the module docstring)."""
    session.execute(
        text(
            "UPDATE spend_sync_cursor SET position = :end, updated_at = now() "
            "WHERE position >= :start AND position < :end"
        ),
        {"start": window_start, "end": window_end},
    )


def start_run(session: Session, window_start: datetime, window_end: datetime) -> int:
    # Called under the sync lock: any run still marked running died without finishing.
    session.execute(
        update(SpendSyncRun).where(SpendSyncRun.status == "running")
        .values(status="abandoned", finished_at=func.now())
    )
    run = SpendSyncRun(window_start=window_start, window_end=window_end, status="running")
    session.add(run)
    session.flush()
    return run.id


def finish_run(session: Session, run_id: int, counts: Counts, duration_ms: int, error: str | None = None) -> None:
    session.execute(
        update(SpendSyncRun).where(SpendSyncRun.id == run_id).values(
            finished_at=func.now(), pages=counts.pages, rows_seen=counts.rows_seen, inserted=counts.inserted,
            debited=counts.debited, skipped=counts.skipped, duration_ms=duration_ms,
            status="error" if error else "ok", error=error[:1000] if error else None,
        )
    )
    session.execute(delete(SpendSyncRun).where(SpendSyncRun.started_at < func.now() - KEEP_RUNS))


@dataclass(frozen=True)
class SyncStatus:
    cursor: datetime | None
    lag_seconds: float | None  # now minus the cursor: how far behind the stored usage is
    last_run: dict[str, Any] | None


def status(session: Session, now: datetime | None = None) -> SyncStatus:
    """Cursor, lag and the last run, for the `status` command and monitoring."""
    now = now or datetime.now(UTC)
    found = cursor(session)
    run = session.execute(select(SpendSyncRun).order_by(SpendSyncRun.id.desc()).limit(1)).scalar_one_or_none()
    last = None
    if run is not None:
        last = {
            name: getattr(run, name)
            for name in ("id", "status", "started_at", "finished_at", "window_start", "window_end", "pages",
                         "rows_seen", "inserted", "debited", "skipped", "duration_ms", "error")
        }
    return SyncStatus(
        cursor=found.position if found else None,
        lag_seconds=(now - found.position).total_seconds() if found else None,
        last_run=last,
    )
