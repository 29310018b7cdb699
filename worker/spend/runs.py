"""The spend sync's persisted state: its cursor, a record of every run, and a status summary.

The cursor is how far every spend window is read without a gap (worker.spend.plan.frontier);
it only moves forward. A run record is one beat run (with the windows it sent, as their readers
add to it) or one in-process run of the CLI.
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
    origin: datetime  # where syncing began: the first window starts here


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


def move_cursor(session: Session, frontier: datetime | None) -> datetime | None:
    """The cursor to the windows' read frontier; it only moves forward."""
    if frontier is not None:
        session.execute(text("UPDATE spend_sync_cursor SET position = :p, updated_at = now() WHERE position < :p"),
                        {"p": frontier})
    found = cursor(session)
    return found.position if found else None


def start_run(session: Session, window_start: datetime | None, window_end: datetime | None) -> int:
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


def add_counts(session: Session, run_id: int | None, counts: Counts, duration_ms: int) -> None:
    """A window read by a `spend.window` task, added to the beat run that sent it."""
    if run_id is None:
        return
    session.execute(
        update(SpendSyncRun).where(SpendSyncRun.id == run_id).values(
            finished_at=func.now(), pages=SpendSyncRun.pages + counts.pages,
            rows_seen=SpendSyncRun.rows_seen + counts.rows_seen, inserted=SpendSyncRun.inserted + counts.inserted,
            debited=SpendSyncRun.debited + counts.debited, skipped=SpendSyncRun.skipped + counts.skipped,
            duration_ms=SpendSyncRun.duration_ms + duration_ms,
        )
    )


def fetched_per_stored(session: Session, since: timedelta = timedelta(hours=1)) -> tuple[int, int]:
    """(rows fetched from the source, rows stored) by the runs of the last hour: a sync that
    fetches each row about once keeps the first close to the second."""
    seen, stored = session.execute(
        select(func.coalesce(func.sum(SpendSyncRun.rows_seen), 0), func.coalesce(func.sum(SpendSyncRun.inserted), 0))
        .where(SpendSyncRun.started_at > func.now() - since)
    ).one()
    return int(seen), int(stored)


@dataclass(frozen=True)
class SyncStatus:
    cursor: datetime | None
    lag_seconds: float | None  # now minus the cursor: how far behind the stored usage is
    last_run: dict[str, Any] | None
    last_hour: dict[str, int] | None = None  # rows fetched and stored by the last hour's runs


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
    seen, stored = fetched_per_stored(session)
    return SyncStatus(
        cursor=found.position if found else None,
        lag_seconds=(now - found.position).total_seconds() if found else None,
        last_run=last,
        last_hour={"rows_fetched": seen, "rows_stored": stored},
    )
