"""The spend sync: the proxy's spend logs, window by window, into spend_logs and the ledger.

Two ways to run it, over the same windows (worker.spend.plan) and the same reader
(worker.spend.read):
- `dispatch`, the beat's `spend.sync`: verifies the windows already read by ranges
  (worker.spend.verify: a few counts), plans the windows due for a read or a re-read and
  sends each to the `spend` queue as a `spend.window` task, so every worker on that queue reads
  windows at once (several proxy replicas then serve pages in parallel). A finished window
  sends the next unread one, so a backlog drains without waiting for the beat.
- `sync`, the CLI's `sync-spend` (and the tests): the same plan, read in this process.
Both take the spend sync's advisory lock to plan; readers hold a window by its lease instead,
and each row is debited once by request_id whatever reads overlap. The cursor is the end of the
windows read without a gap.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from worker.app import app
from worker.db import Lock, exclusive, session_scope
from worker.proxy import ProxyError
from worker.settings import get_settings
from worker.spend import plan
from worker.spend import runs as spend_runs
from worker.spend.fetch import ProxySource
from worker.spend.ingest import Counts
from worker.spend.read import Source, read_range, update_window
from worker.spend.verify import verify
from worker.spend.windows import Window, whole_second, windows

log = logging.getLogger(__name__)
Progress = Callable[[float, float], None]  # (windows done, windows planned)
WINDOW_TASK = "spend.window"
MOST_SENT = 64  # windows sent per beat run; finished ones send the rest of a backlog


def source() -> Source:
    if get_settings().litellm_database_url:
        from worker.spend.direct import DirectSource

        return DirectSource()
    return ProxySource()


@dataclass
class SyncResult:
    skipped: bool = False  # another sync held the lock; this one did nothing
    span: Window | None = None
    counts: Counts = field(default_factory=Counts)
    cursor: datetime | None = None


def _plan(session, now: datetime) -> bool:
    """Make the windows up to the settle time exist; False while there is nothing to start from."""
    s = get_settings()
    cursor = spend_runs.ensure_cursor(session, s.spend_sync_start)
    if cursor is None:
        return False
    plan.extend(session, cursor.origin, now - timedelta(seconds=s.spend_settle_s))
    plan.forget_old(session, now)
    return True


def sync(*, now: datetime | None = None, start: datetime | None = None, end: datetime | None = None,
         progress: Progress | None = None) -> SyncResult:
    """One run in this process; with start or end, a backfill of that range instead."""
    now = now or datetime.now(UTC)
    with exclusive(Lock.SPEND_SYNC) as mine:
        if not mine:
            log.info("spend sync skipped: another spend sync is running")
            return SyncResult(skipped=True)
        if start is not None or end is not None:
            return _backfill(now, start, end, progress)
        with session_scope() as session:
            if not _plan(session, now):
                log.info("spend sync: nothing to read yet (no account, and no SPEND_SYNC_START)")
                return SyncResult()
        counts, src = Counts(), source()
        verify(src, now, counts)
        with session_scope() as session:
            due = sorted(plan.due(session, now), key=lambda d: d.start)
            horizon = now - timedelta(seconds=get_settings().spend_settle_s)
            span = Window(due[0].start, min(max(d.end for d in due), horizon)) if due else None
            run_id = spend_runs.start_run(session, span.start if span else None, span.end if span else None)
        began = time.monotonic()
        try:
            for n, window in enumerate(due, 1):
                update_window(src, window.start, now, counts)
                if progress is not None:
                    progress(n, len(due))
        except Exception as exc:
            _finish(run_id, counts, began, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            position = _move_cursor()  # over the windows read before any failure too
        _finish(run_id, counts, began)
    return SyncResult(span=span, counts=counts, cursor=position)


def _backfill(now: datetime, start: datetime | None, end: datetime | None, progress: Progress | None) -> SyncResult:
    """Read a range by hand, deduplicated like any read; it moves no window and no cursor."""
    s = get_settings()
    with session_scope() as session:
        cursor = spend_runs.ensure_cursor(session, s.spend_sync_start)
    start = start or (cursor.position if cursor else None)
    end = end or now - timedelta(seconds=s.spend_settle_s)
    if start is None or whole_second(start) >= whole_second(end):
        return SyncResult()
    span = Window(whole_second(start), whole_second(end))
    with session_scope() as session:
        run_id = spend_runs.start_run(session, span.start, span.end)
    counts, began, src = Counts(), time.monotonic(), source()
    pieces = list(windows(span.start, span.end, s.spend_window_s))
    try:
        for n, window in enumerate(pieces, 1):
            read_range(src, window, counts)
            if progress is not None:
                progress(n, len(pieces))
    except Exception as exc:
        _finish(run_id, counts, began, f"{type(exc).__name__}: {exc}")
        raise
    _finish(run_id, counts, began)
    with session_scope() as session:
        cursor = spend_runs.cursor(session)
    return SyncResult(span=span, counts=counts, cursor=cursor.position if cursor else None)


def dispatch(now: datetime | None = None) -> int:
    """The beat's run: send the windows due to the readers; returns how many were sent."""
    now = now or datetime.now(UTC)
    with exclusive(Lock.SPEND_SYNC) as mine:
        if not mine:
            log.info("spend sync skipped: another spend sync is running")
            return 0
        with session_scope() as session:
            if not _plan(session, now):
                return 0
        checked, began = Counts(), time.monotonic()
        try:
            verify(source(), now, checked)  # a few counts; windows that differ become due
        except ProxyError as exc:
            # The unread windows still go out: their readers retry the proxy with backoff.
            log.warning("spend verification skipped this run: %s", exc)
        with session_scope() as session:
            starts = plan.mark_sent(session, [d.start for d in plan.due(session, now, limit=MOST_SENT)])
            run_id = spend_runs.start_run(session, min(starts, default=None), None)
            spend_runs.finish_run(session, run_id, checked, int((time.monotonic() - began) * 1000))
    _send(starts, run_id)  # after the commit that marked them sent
    _move_cursor()
    return len(starts)


def read_window(start: datetime, run_id: int | None, reader: str | None = None) -> Counts:
    """A `spend.window` task's work: bring one window up to date, then send the next unread one."""
    now, counts = datetime.now(UTC), Counts()
    began = time.monotonic()
    update_window(source(), start, now, counts, reader)
    with session_scope() as session:
        spend_runs.add_counts(session, run_id, counts, int((time.monotonic() - began) * 1000))
        following = plan.next_unread(session, now, 1)
    _send(following, run_id)
    _move_cursor()
    return counts


def _send(starts: list[datetime], run_id: int | None) -> None:
    for start in sorted(starts):
        event = {"start": start.isoformat(), "run_id": run_id, "reader": uuid.uuid4().hex}
        app.send_task(WINDOW_TASK, kwargs={"event": event})


def _move_cursor() -> datetime | None:
    with session_scope() as session:
        return spend_runs.move_cursor(session, plan.frontier(session))


def _finish(run_id: int, counts: Counts, began: float, error: str | None = None) -> None:
    try:
        with session_scope() as session:
            spend_runs.finish_run(session, run_id, counts, int((time.monotonic() - began) * 1000), error)
    except Exception:
        # Failing to record the run must not hide why the run itself failed.
        log.warning("could not record the spend sync run", exc_info=True)
    log.info("spend sync: pages=%d seen=%d inserted=%d debited=%d skipped=%d rejected=%d", counts.pages,
             counts.rows_seen, counts.inserted, counts.debited, counts.skipped, counts.rejected)
