"""The spend sync: read the proxy's spend logs window by window into spend_logs and the ledger.

Each run covers (cursor - look-back) .. (now - settle) in windows, oldest first. A window is
paged newest first until a short page; each page is written (and committed) before the next is
fetched, so memory holds one page whatever the history. The cursor moves in the transaction of
a window's last page (worker.spend.read): a crash leaves it at the last complete window, and the
next run re-reads from there, every row deduped by request_id. One run at a time, by an advisory
lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from worker.alerts.checks import check_new_usage
from worker.db import Lock, exclusive, session_scope
from worker.settings import get_settings
from worker.spend import runs as spend_runs
from worker.spend.fetch import drop_prefetch
from worker.spend.ingest import Counts
from worker.spend.read import read_window
from worker.spend.windows import Window, whole_second, windows

log = logging.getLogger(__name__)
Progress = Callable[[float, float], None]  # (seconds of the span done, seconds in the span)


@dataclass
class SyncResult:
    skipped: bool = False  # another sync held the lock; this one did nothing
    span: Window | None = None
    counts: Counts = field(default_factory=Counts)
    cursor: datetime | None = None


def sync(*, now: datetime | None = None, start: datetime | None = None, end: datetime | None = None,
         progress: Progress | None = None) -> SyncResult:
    """One run: the beat task's job, and `sync-spend` (where start/end make a backfill)."""
    with exclusive(Lock.SPEND_SYNC) as mine:
        if not mine:
            log.info("spend sync skipped: another spend sync is running")
            return SyncResult(skipped=True)
        result = _run(now or datetime.now(UTC), start, end, progress)
        # Still under the lock, every page committed: accounts just debited may have crossed an
        # alert threshold. Its watermark also catches up usage of an earlier run that failed.
        check_new_usage()
        return result


def _plan(now: datetime, start: datetime | None, end: datetime | None) -> Window | None:
    s = get_settings()
    with session_scope() as session:
        cursor = spend_runs.ensure_cursor(session, s.spend_sync_start)
    if start is None:
        if cursor is None:
            return None
        start = max(cursor.position - timedelta(seconds=s.spend_lookback_s), cursor.origin)
    end = end or now - timedelta(seconds=s.spend_settle_s)
    span = Window(whole_second(start), whole_second(end))
    return span if span.seconds > 0 else None


def _run(now: datetime, start: datetime | None, end: datetime | None, progress: Progress | None) -> SyncResult:
    span = _plan(now, start, end)
    if span is None:
        log.info("spend sync: nothing to read yet (no account, or the range is empty)")
        return SyncResult()
    with session_scope() as session:
        run_id = spend_runs.start_run(session, span.start, span.end)
    counts, began = Counts(), time.monotonic()

    def done(window: Window) -> None:
        if progress is not None:
            progress((window.end - span.start).total_seconds(), span.seconds)

    try:
        ahead = windows(span.start, span.end, get_settings().spend_window_s)
        window = next(ahead, None)
        while window is not None:
            following = next(ahead, None)
            read_window(window, counts, done, following)
            window = following
    except Exception as exc:
        _finish(run_id, counts, began, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        drop_prefetch()  # a page fetched ahead for a window this run will not read
    _finish(run_id, counts, began)
    with session_scope() as session:
        position = spend_runs.cursor(session)
    log.info("spend sync %s: pages=%d seen=%d inserted=%d debited=%d skipped=%d", span, counts.pages,
             counts.rows_seen, counts.inserted, counts.debited, counts.skipped)
    return SyncResult(span=span, counts=counts, cursor=position.position if position else None)


def _finish(run_id: int, counts: Counts, began: float, error: str | None = None) -> None:
    try:
        with session_scope() as session:
            spend_runs.finish_run(session, run_id, counts, int((time.monotonic() - began) * 1000), error)
    except Exception:
        # Failing to record the run must not hide why the run itself failed.
        log.warning("could not record the spend sync run", exc_info=True)
