"""Write one page of spend-log rows: store each row once, debit the new ones that are ours.

A page is COPYed into a session-local temporary table, then one statement stores the rows new
to spend_logs (INSERT ... ON CONFLICT DO NOTHING, each row's owner found by joining its key hash
to accounts), debits those with spend on our keys, and adds them to spend_daily. COPY is
formatted by psycopg's C code (bench/spend_ingest.py). Only rows new to spend_logs are debited,
and the ledger's idempotency key ('spend:<request_id>') backs that up, so reading a window again
(verification, retries, parallel readers, shared boundary seconds) never charges twice. A row
older than spend_logs' retention (worker.spend.retention) is not stored again; it is debited and
counted in spend_daily only if its ledger entry is new.

Rows set aside (worker.spend.rows) are recorded once each in spend_rejected, with a dead letter
holding the row, in the same transaction as the rest of the page.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from worker.delivery import dead_letters
from worker.delivery.dead_letters import pg_text
from worker.spend.retention import keep, keep_foreign
from worker.spend.rows import Rejected, Row, payload
from worker.spend.windows import Window

DEAD_LETTER_TASK = "spend.row"


@dataclass
class Counts:
    pages: int = 0
    rows_seen: int = 0  # rows fetched from the source, count requests included
    inserted: int = 0
    debited: int = 0
    skipped: int = 0  # new rows not debited: someone else's key, or no spend (failed calls)
    rejected: int = 0  # rows set aside as dead letters, each counted once

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


# Lives as long as the database connection; emptied at every commit, and by write_page itself.
_PAGE_TABLE = text(
    """
    CREATE TEMP TABLE IF NOT EXISTS spend_page (
        request_id text, api_key text, model text, spend numeric(20, 10), prompt_tokens integer,
        completion_tokens integer, status text, start_time timestamptz
    ) ON COMMIT DELETE ROWS
    """
)
_COPY = ("COPY spend_page (request_id, api_key, model, spend, prompt_tokens, completion_tokens, status, start_time) "
         "FROM STDIN")
_STORE_AND_DEBIT = text(
    """
    WITH page AS (
        SELECT p.*, a.user_id,
               coalesce(p.start_time < (SELECT position FROM spend_sync_cursor)
                        - CASE WHEN a.user_id IS NULL THEN CAST(:keep_foreign AS interval)
                               ELSE CAST(:keep AS interval) END, false) AS old
        FROM spend_page p LEFT JOIN accounts a ON a.key_hash = p.api_key
    ), new AS (
        INSERT INTO spend_logs (request_id, api_key, user_id, model, spend, prompt_tokens, completion_tokens,
                                status, start_time)
        SELECT request_id, api_key, user_id, model, spend, prompt_tokens, completion_tokens, status, start_time
        FROM page WHERE NOT old
        ON CONFLICT (request_id) DO NOTHING
        RETURNING user_id, request_id, model, spend, prompt_tokens, completion_tokens, status, start_time
    ), debited AS (
        -- A row past retention is not stored again, but still debited once (by its ledger key).
        INSERT INTO ledger_entries (user_id, kind, idempotency_key, spent_usd, occurred_at)
        SELECT user_id, 'usage', 'spend:' || request_id, spend, start_time
        FROM (SELECT user_id, request_id, spend, start_time FROM new
              UNION ALL SELECT user_id, request_id, spend, start_time FROM page WHERE old) r
        WHERE user_id IS NOT NULL AND spend > 0
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING idempotency_key
    ), counted AS (
        SELECT user_id, request_id, model, spend, prompt_tokens, completion_tokens, status, start_time FROM new
        UNION ALL
        SELECT user_id, request_id, model, spend, prompt_tokens, completion_tokens, status, start_time FROM page
        WHERE old AND 'spend:' || request_id IN (SELECT idempotency_key FROM debited)
    ), daily AS (
        -- In key order, so readers of windows in parallel lock shared rows in one order.
        INSERT INTO spend_daily AS d (user_id, day, model, requests, failed_requests, prompt_tokens,
                                      completion_tokens, spend_usd)
        SELECT user_id, (start_time AT TIME ZONE 'UTC')::date, coalesce(model, ''),
               count(*) FILTER (WHERE status IS DISTINCT FROM 'failure'), count(*) FILTER (WHERE status = 'failure'),
               sum(prompt_tokens), sum(completion_tokens), sum(spend)
        FROM counted WHERE user_id IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (user_id, day, model) DO UPDATE SET
            requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests,
            prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = d.completion_tokens + excluded.completion_tokens,
            spend_usd = d.spend_usd + excluded.spend_usd
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM counted), (SELECT count(*) FROM debited), (SELECT count(*) FROM daily)
    """
)


def stored_between(session: Session, start: datetime, end: datetime) -> int:
    """Rows accounted for whose startTime the source's inclusive whole-second filter [start, end]
    matches: stored, or set aside and not yet replayed."""
    return session.execute(
        text("SELECT (SELECT count(*) FROM spend_logs WHERE start_time >= :start AND start_time <= :end)"
             " + (SELECT count(*) FROM spend_rejected WHERE resolved_at IS NULL"
             "    AND start_time >= :start AND start_time <= :end)"),
        {"start": start, "end": end},
    ).scalar_one()


def stored_by_window(session: Session, windows: list[Window]) -> list[int]:
    """stored_between for many windows, in one statement (each window a pair of index range scans)."""
    found = dict(session.execute(
        text("SELECT w.s, (SELECT count(*) FROM spend_logs WHERE start_time >= w.s AND start_time <= w.e)"
             " + (SELECT count(*) FROM spend_rejected WHERE resolved_at IS NULL"
             "    AND start_time >= w.s AND start_time <= w.e)"
             " FROM unnest(CAST(:s AS timestamptz[]), CAST(:e AS timestamptz[])) AS w(s, e)"),
        {"s": [w.start for w in windows], "e": [w.end for w in windows]},
    ).all())
    return [found[w.start] for w in windows]


def write_page(session: Session, rows: list[Row | Rejected], fallback_time: datetime | None = None) -> Counts:
    """Store and debit one page inside the caller's transaction; returns what it did.

    `fallback_time` files a set-aside row whose own startTime could not be read (its window's start)."""
    counts = Counts(pages=1, rows_seen=len(rows))
    good = {r.request_id: r for r in rows if isinstance(r, Row)}  # a page must not repeat a key in one INSERT
    for bad in (r for r in rows if isinstance(r, Rejected)):
        counts.rejected += _set_aside(session, bad, fallback_time)
    if not good:
        return counts
    session.execute(_PAGE_TABLE)
    with session.connection().connection.driver_connection.cursor() as cursor:
        with cursor.copy(_COPY) as copy:
            for row in good.values():
                copy.write_row(row.as_copy())
    cutoffs = {"keep": keep(), "keep_foreign": keep_foreign()}
    counts.inserted, counts.debited, _ = session.execute(_STORE_AND_DEBIT, cutoffs).one()
    session.execute(text("DELETE FROM spend_page"))
    counts.skipped = counts.inserted - counts.debited
    return counts


def _set_aside(session: Session, row: Rejected, fallback_time: datetime | None) -> int:
    """Record a rejected row once (re-reading its window finds it recorded); 1 if new."""
    when = row.start_time or fallback_time
    if when is None:
        raise ValueError("a set-aside row needs a time to be filed under")
    key = pg_text(row.request_id)[:1000] or f"(no request_id) {payload(row)[:200]}"
    fresh = session.execute(
        text("INSERT INTO spend_rejected (request_id, start_time, reason) VALUES (:id, :t, :reason) "
             "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"),
        {"id": key, "t": when, "reason": pg_text(row.reason)[:1000]},
    ).scalar() is not None
    if fresh:
        letter = dead_letters.add(session, DEAD_LETTER_TASK, payload(row), f"spend-log row set aside: {row.reason}")
        session.execute(text("UPDATE spend_rejected SET dead_letter_id = :d WHERE request_id = :id"),
                        {"d": letter, "id": key})
    return int(fresh)
