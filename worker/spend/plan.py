"""The spend windows: which exist, which are due for a read or a verification, who reads them.

Time from the cursor's origin on is cut into windows of SPEND_WINDOW_S, aligned to multiples of
it. A window is read once, as far as the settle time allows (`read_to`), then only verified: the
source's count against what is stored, a range of windows at a time (worker.spend.verify), and
read again only where they differ. Recent windows are verified every run, older ones less often,
and none beyond SPEND_VERIFY_S. A reader holds a
window by a lease in its row, so two readers (parallel tasks, the CLI) never read one window at
once. Each batch stored renews the lease; a dead reader's lease runs out, and a retry of the same
message (same reader name) takes its window back at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from worker.settings import get_settings
from worker.spend.windows import Window, whole_second

LEASE = timedelta(minutes=2)  # renewed by every batch stored; a dead reader's window waits this long
SENT_LEASE = timedelta(minutes=10)  # a window sent to the readers is not sent again before this
NEWEST_VERIFIED_BY = timedelta(minutes=8)  # every window in the horizon is verified at least this often
MOST_NEW_WINDOWS = 10_000  # per planning run: a backfill over years is planned a slice at a time


@dataclass(frozen=True)
class Due:
    start: datetime
    end: datetime
    read_to: datetime
    alerts_due: bool = False


def extend(session: Session, origin: datetime, upto: datetime) -> int:
    """Create the windows up to `upto` that do not exist yet; returns how many."""
    size = timedelta(seconds=get_settings().spend_window_s)
    last = session.execute(text("SELECT max(end_time) FROM spend_windows")).scalar()
    start = last or whole_second(origin)
    rows = []
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    while start < upto and len(rows) < MOST_NEW_WINDOWS:
        end = epoch + ((start - epoch) // size + 1) * size  # the next aligned boundary
        rows.append({"s": start, "e": end})
        start = end
    if rows:
        session.execute(text("INSERT INTO spend_windows (start_time, end_time, read_to) VALUES (:s, :e, :s) "
                             "ON CONFLICT DO NOTHING"), rows)
    return len(rows)


def recheck_after(age: timedelta) -> timedelta:
    """How long a verified window of this age rests: the newer, the likelier a late row."""
    return min(max(age / 16, timedelta(seconds=get_settings().spend_sync_interval_s)), NEWEST_VERIFIED_BY)


def due(session: Session, now: datetime, limit: int | None = None) -> list[Due]:
    """Windows with rows to read (oldest first), then windows whose verification found them
    differing from the source (worker.spend.verify flags them), newest first."""
    s = get_settings()
    horizon = whole_second(now - timedelta(seconds=s.spend_settle_s))
    unread = session.execute(
        text("SELECT start_time, end_time, read_to FROM spend_windows "
             "WHERE read_to < end_time AND read_to < :h ORDER BY start_time LIMIT :n"),
        {"h": horizon, "n": limit or MOST_NEW_WINDOWS},
    ).all()
    flagged = session.execute(
        text("SELECT start_time, end_time, read_to FROM spend_windows "
             "WHERE read_to = end_time AND verified_at IS NULL AND end_time > :oldest ORDER BY start_time DESC"),
        {"oldest": now - timedelta(seconds=s.spend_verify_s)},
    ).all()
    return [Due(r.start_time, r.end_time, r.read_to) for r in [*unread, *flagged]][:limit]


def claim(session: Session, start: datetime, reader: str) -> Due | None:
    """Hold the window for a read; None when another reader holds it."""
    row = session.execute(
        text("UPDATE spend_windows SET claimed_until = now() + :lease, claimed_by = :r "
             "WHERE start_time = :s AND (claimed_until IS NULL OR claimed_until < now() OR claimed_by = :r) "
             "RETURNING start_time, end_time, read_to, alerts_due"),
        {"s": start, "lease": LEASE, "r": reader},
    ).one_or_none()
    return Due(*row) if row else None


def renew(session: Session, start: datetime, stored_usage: bool) -> None:
    """The holder is alive and reading; `stored_usage` flags the window for an alert check."""
    session.execute(text("UPDATE spend_windows SET claimed_until = now() + :lease, "
                         "alerts_due = alerts_due OR :u WHERE start_time = :s"),
                    {"s": start, "lease": LEASE, "u": stored_usage})


def release(session: Session, window: Due, read_to: datetime, now: datetime, source_count: int | None,
            stored_count: int | None) -> None:
    session.execute(
        text("UPDATE spend_windows SET claimed_until = NULL, claimed_by = NULL, enqueued_at = NULL, read_to = :to, "
             "reads = reads + 1, "
             "alerts_due = false, "
             "verified_at = :now, source_count = :sc, stored_count = :st, "
             "first_read_at = CASE WHEN :to = end_time THEN coalesce(first_read_at, :now) END "
             "WHERE start_time = :s"),
        {"s": window.start, "to": read_to, "now": now, "sc": source_count, "st": stored_count},
    )


def let_go(session: Session, start: datetime) -> None:
    """Give a window back after a failed read, for the next reader."""
    session.execute(text("UPDATE spend_windows SET claimed_until = NULL, claimed_by = NULL, enqueued_at = NULL "
                         "WHERE start_time = :s"),
                    {"s": start})


def next_unread(session: Session, now: datetime, n: int) -> list[datetime]:
    """Up to n windows of a backlog (ending before the settle time) still to read and sent to no
    reader, now marked as sent. The newest window, still open, waits for the beat: sent again by
    its own reader, it was read back to back, a proxy request or more every second."""
    return list(session.execute(
        text("UPDATE spend_windows SET enqueued_at = now() WHERE start_time IN ("
             " SELECT start_time FROM spend_windows WHERE read_to < end_time AND read_to < :h AND end_time <= :h"
             " AND (enqueued_at IS NULL OR enqueued_at < now() - :lease)"
             " ORDER BY start_time LIMIT :n FOR UPDATE SKIP LOCKED) RETURNING start_time"),
        {"h": now - timedelta(seconds=get_settings().spend_settle_s), "lease": SENT_LEASE, "n": n},
    ).scalars())


def mark_sent(session: Session, starts: list[datetime]) -> list[datetime]:
    """Of these windows, those not sent to a reader within the lease, now marked as sent."""
    return list(session.execute(
        text("UPDATE spend_windows SET enqueued_at = now() WHERE start_time = ANY(:s) "
             "AND (enqueued_at IS NULL OR enqueued_at < now() - :lease) RETURNING start_time"),
        {"s": starts, "lease": SENT_LEASE},
    ).scalars())


def frontier(session: Session) -> datetime | None:
    """How far every window is read without a gap: the cursor."""
    return session.execute(text(
        "SELECT coalesce((SELECT read_to FROM spend_windows WHERE read_to < end_time ORDER BY start_time LIMIT 1),"
        " (SELECT max(end_time) FROM spend_windows))"
    )).scalar()


def forget_old(session: Session, now: datetime) -> None:
    """Windows past the verification horizon are never read again."""
    keep = timedelta(seconds=get_settings().spend_verify_s) + timedelta(days=1)
    session.execute(text("DELETE FROM spend_windows WHERE end_time < :t AND read_to = end_time "
                         "AND end_time < (SELECT max(end_time) FROM spend_windows)"), {"t": now - keep})


def as_window(due: Due) -> Window:
    return Window(due.start, due.end)
