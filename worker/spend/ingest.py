"""Write one page of spend-log rows: store each row once, debit the new ones that are ours.

A page is COPYed into a session-local temporary table, then one statement stores the rows new
to spend_logs (INSERT ... ON CONFLICT DO NOTHING, each row's owner found by joining its key hash
to accounts) and debits those with spend on our keys. COPY is formatted by psycopg's C code; the
earlier per-column arrays were quoted element by element in Python, which cost more than the
database's own work (bench/spend_ingest.py). Only rows new to spend_logs are debited, and the
ledger's idempotency key ('spend:<request_id>') backs that up, so re-reading a window
(look-back, retries, shared boundary seconds) never charges twice.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from schemas.proxy import SpendLogRow
from worker.credits.ledger import money


@dataclass
class Counts:
    pages: int = 0
    rows_seen: int = 0
    inserted: int = 0
    debited: int = 0
    skipped: int = 0  # new rows not debited: someone else's key, or no spend (failed calls)

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
    WITH new AS (
        INSERT INTO spend_logs (request_id, api_key, user_id, model, spend, prompt_tokens, completion_tokens,
                                status, start_time)
        SELECT p.request_id, p.api_key, a.user_id, p.model, p.spend, p.prompt_tokens, p.completion_tokens,
               p.status, p.start_time
        FROM spend_page p LEFT JOIN accounts a ON a.key_hash = p.api_key
        ON CONFLICT (request_id) DO NOTHING
        RETURNING user_id, request_id, spend, start_time
    ), debited AS (
        INSERT INTO ledger_entries (user_id, kind, idempotency_key, spent_usd, occurred_at)
        SELECT user_id, 'usage', 'spend:' || request_id, spend, start_time FROM new
        WHERE user_id IS NOT NULL AND spend > 0
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM new), (SELECT count(*) FROM debited)
    """
)


def stored_between(session: Session, start: datetime, end: datetime) -> int:
    """Rows stored whose startTime the proxy's inclusive whole-second filter [start, end] matches."""
    return session.execute(
        text("SELECT count(*) FROM spend_logs WHERE start_time >= :start AND start_time <= :end"),
        {"start": start, "end": end},
    ).scalar_one()


def write_page(session: Session, rows: list[SpendLogRow]) -> Counts:
    """Store and debit one page inside the caller's transaction; returns what it did."""
    counts = Counts(pages=1, rows_seen=len(rows))
    # A page should not repeat a request_id, but one INSERT must not see the same key twice.
    unique = {row.request_id: row for row in rows}
    if not unique:
        return counts
    session.execute(_PAGE_TABLE)
    with session.connection().connection.driver_connection.cursor() as cursor:
        with cursor.copy(_COPY) as copy:
            for r in unique.values():
                # The name the caller asked for (fake-gpt-2), not the provider route (openai/fake-gpt-2).
                copy.write_row((r.request_id, r.api_key, r.model_group or r.model, money(r.spend),
                                r.prompt_tokens, r.completion_tokens, r.status, r.startTime))
    counts.inserted, counts.debited = session.execute(_STORE_AND_DEBIT).one()
    session.execute(text("DELETE FROM spend_page"))
    counts.skipped = counts.inserted - counts.debited
    return counts
