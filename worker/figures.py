"""The figures that matter for money, read from the database: shared by /metrics and `status`.

Tables of the spend sync (0002) may not exist in a database migrated before it; their figures are
then None rather than an error, so metrics and `status` keep working during a rolling upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, text

# Dead-letter reasons are free text; metrics group them into these few kinds so label values
# stay bounded. The prefixes are the ones worker.delivery's policy, consumer and broker write.
_REASON_KIND = """
CASE
    WHEN reason LIKE 'gave up after %' THEN 'retries_exhausted'
    WHEN reason LIKE 'unexpected error:%' THEN 'unexpected_error'
    WHEN task_name LIKE 'queue:%' OR task_name = 'unknown' OR reason LIKE 'message body cannot be decoded%'
         OR reason LIKE 'unknown task name%' OR reason LIKE 'invalid task message%' THEN 'malformed_message'
    ELSE 'rejected'
END
"""


@dataclass
class Figures:
    sync_cursor: datetime | None = None
    sync_lag_s: float | None = None
    rows_ingested: int | None = None
    rows_fetched_hour: int = 0  # rows the spend sync fetched from its source in the last hour
    rows_stored_hour: int = 0
    usage_debited_usd: Decimal = Decimal(0)
    drift_accounts: int = 0
    dead_letters: dict[tuple[str, str], int] = field(default_factory=dict)  # (task, kind) -> open letters
    audit_mismatches: int | None = None  # accounts whose running totals differed from the ledger when last audited

    @property
    def dead_letters_open(self) -> int:
        return sum(self.dead_letters.values())


def _exists(conn: Connection, table: str) -> bool:
    return conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar_one()


def read(conn: Connection) -> Figures:
    f = Figures()
    if _exists(conn, "spend_sync_cursor"):
        row = conn.execute(
            text("SELECT position, extract(epoch FROM now() - position) FROM spend_sync_cursor")
        ).one_or_none()
        if row is not None:
            f.sync_cursor, f.sync_lag_s = row[0], float(row[1])
    if _exists(conn, "spend_logs"):
        # An exact count: this is the audit figure, and an estimate would hide a lost row.
        f.rows_ingested = conn.execute(text("SELECT count(*) FROM spend_logs")).scalar_one()
        f.rows_fetched_hour, f.rows_stored_hour = conn.execute(text(
            "SELECT coalesce(sum(rows_seen), 0), coalesce(sum(inserted), 0) FROM spend_sync_runs "
            "WHERE started_at > now() - interval '1 hour'")).one()
    totals = _exists(conn, "account_totals")
    # From the running totals where they exist (one row per account, audited against the ledger),
    # instead of a scan of the whole ledger at every scrape.
    f.usage_debited_usd = Decimal(conn.execute(
        text("SELECT coalesce(sum(spent_usd), 0) FROM account_totals") if totals else
        text("SELECT coalesce(sum(spent_usd), 0) FROM ledger_entries WHERE kind = 'usage'")
    ).scalar_one())
    if _exists(conn, "audit_mismatches"):
        f.audit_mismatches = conn.execute(text("SELECT count(*) FROM audit_mismatches")).scalar_one()
    # Same test as account_balances.credited_usd vs budget_pushed_usd, without the view's savings
    # arithmetic. Keys that failed for good are left out: no push will ever fix them.
    f.drift_accounts = conn.execute(text(
        "SELECT count(*) FROM accounts a "
        "LEFT JOIN account_credits c USING (user_id) "
        "WHERE a.key_status <> 'failed' AND a.budget_pushed_usd IS DISTINCT FROM coalesce(c.credited_usd, 0)"
    )).scalar_one()
    rows = conn.execute(text(
        f"SELECT task_name, {_REASON_KIND} AS kind, count(*) FROM dead_letters "
        "WHERE status = 'open' GROUP BY 1, 2"
    ))
    f.dead_letters = {(task, kind): n for task, kind, n in rows}
    return f
