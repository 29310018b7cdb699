"""The running totals checked against a full recomputation from the ledger, which stays the truth.

account_totals and account_grants are kept by a trigger (migration 0009) in the transaction of
every ledger write; this module sums the ledger again, account by account, and reports every
account where the two differ, with the savings figure recomputed by the window over the ledger
that account_balances used before the totals (0005). Each page of accounts is compared in one
statement, so one snapshot: the totals move in the same transactions as the entries, and a page
never sees one without the other.

`litellm-credits audit` checks every account. Reconcile checks a slice (audit_slice): accounts
after audit_cursor, in user id order, until their entries reach AUDIT_ENTRIES_PER_RECONCILE, so
each run costs at most that many ledger rows read, and successive runs go round every account.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from worker.db import session_scope

log = logging.getLogger(__name__)
PAGE = 500

_TOTALS = ("entries", "credited_usd", "paid_usd", "spent_usd", "last_spend_at", "replays")
_GRANTS = ("first_id", "credit_usd", "paid_usd", "credit_before", "saved_before")
_COMPARE = text(f"""
WITH ledger AS (
    SELECT user_id, count(*) AS entries, coalesce(sum(credit_usd) FILTER (WHERE kind <> 'usage'), 0) AS credited_usd,
           coalesce(sum(paid_usd), 0) AS paid_usd, coalesce(sum(spent_usd), 0) AS spent_usd,
           max(occurred_at) FILTER (WHERE kind = 'usage') AS last_spend_at,
           bool_or(expires_at IS NOT NULL OR kind IN ('adjustment', 'expiry')) AS replays
    FROM ledger_entries WHERE user_id = ANY(:ids) GROUP BY user_id
), grants AS (
    SELECT user_id, grant_key, min(id) AS first_id, sum(credit_usd) AS credit_usd, sum(paid_usd) AS paid_usd
    FROM ledger_entries WHERE user_id = ANY(:ids) AND grant_key IS NOT NULL GROUP BY user_id, grant_key
), ordered AS (
    SELECT g.*, coalesce(sum(credit_usd) OVER prior, 0) AS credit_before,
           coalesce(sum(CASE WHEN credit_usd > 0 THEN credit_usd * (1 - paid_usd / credit_usd) END) OVER prior,
                    0) AS saved_before
    FROM grants g
    WINDOW prior AS (PARTITION BY user_id ORDER BY first_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
), savings AS (
    -- 0005's definition: each grant consumed oldest first, clamped to its credit.
    SELECT o.user_id, coalesce(sum(CASE WHEN o.credit_usd > 0 THEN least(greatest(l.spent_usd - o.credit_before, 0),
                   o.credit_usd) * (1 - o.paid_usd / o.credit_usd) END), 0)::numeric(20, 10) AS savings_usd
    FROM ordered o JOIN ledger l USING (user_id) GROUP BY o.user_id
), stored_grants AS (
    SELECT * FROM account_grants WHERE user_id = ANY(:ids)
), bounds AS (  -- the moments each account's grants change, as migration 0009 cuts its segments
    SELECT user_id, occurred_at AS at FROM ledger_entries WHERE user_id = ANY(:ids) AND kind NOT IN ('usage', 'expiry')
    UNION SELECT user_id, expires_at FROM ledger_entries WHERE user_id = ANY(:ids) AND expires_at IS NOT NULL
), bound_lists AS (
    SELECT user_id, array_agg(at ORDER BY at) AS starts FROM bounds GROUP BY user_id
), segments AS (  -- each usage entry in the segment of the last boundary at or before it
    SELECT l.user_id, coalesce(b.starts[width_bucket(l.occurred_at, b.starts)], '-infinity') AS starts_at,
           sum(l.spent_usd) AS spent_usd
    FROM ledger_entries l LEFT JOIN bound_lists b USING (user_id)
    WHERE l.user_id = ANY(:ids) AND l.kind = 'usage' GROUP BY 1, 2
), stored_segments AS (
    SELECT * FROM account_usage_segments WHERE user_id = ANY(:ids)
)
SELECT user_id, 'totals' AS part,
       jsonb_build_object({", ".join(f"'{c}', l.{c}" for c in _TOTALS)},
                          'savings_usd', coalesce(s.savings_usd, 0)) AS ledger,
       jsonb_build_object({", ".join(f"'{c}', t.{c}" for c in _TOTALS)}, 'savings_usd', b.savings_usd) AS stored
FROM accounts a LEFT JOIN ledger l USING (user_id) LEFT JOIN account_totals t USING (user_id)
LEFT JOIN savings s USING (user_id) JOIN account_balances b USING (user_id)
WHERE a.user_id = ANY(:ids)
  AND (({", ".join(f"l.{c}" for c in _TOTALS)}) IS DISTINCT FROM ({", ".join(f"t.{c}" for c in _TOTALS)})
       -- An account that replays (0009) shows grant_burn's savings, replayed at read from its grant
       -- events and its usage segments, which the segment rows below compare with the ledger.
       OR (NOT coalesce(t.replays, false) AND coalesce(s.savings_usd, 0) <> b.savings_usd))
UNION ALL
SELECT user_id, 'grant ' || grant_key,
       CASE WHEN o.user_id IS NOT NULL THEN jsonb_build_object({", ".join(f"'{c}', o.{c}" for c in _GRANTS)}) END,
       CASE WHEN g.user_id IS NOT NULL THEN jsonb_build_object({", ".join(f"'{c}', g.{c}" for c in _GRANTS)}) END
FROM ordered o FULL JOIN stored_grants g USING (user_id, grant_key)
WHERE ({", ".join(f"o.{c}" for c in _GRANTS)}) IS DISTINCT FROM ({", ".join(f"g.{c}" for c in _GRANTS)})
UNION ALL
SELECT user_id, 'usage from ' || starts_at,
       CASE WHEN l.user_id IS NOT NULL THEN jsonb_build_object('spent_usd', l.spent_usd) END,
       CASE WHEN t.user_id IS NOT NULL THEN jsonb_build_object('spent_usd', t.spent_usd) END
FROM segments l FULL JOIN stored_segments t USING (user_id, starts_at)
-- A segment with no usage yet is stored as 0 and recomputed as nothing.
WHERE coalesce(l.spent_usd, 0) <> coalesce(t.spent_usd, 0)
ORDER BY 1, 2
""")


@dataclass(frozen=True)
class Mismatch:
    user_id: str
    part: str  # 'totals', 'grant <grant_key>' or 'usage from <segment start>'
    ledger: dict[str, Any] | None
    stored: dict[str, Any] | None


@dataclass
class AuditReport:
    accounts: int = 0
    entries: int = 0  # ledger entries the recomputation read
    mismatches: list[Mismatch] = field(default_factory=list)
    wrapped: bool = False  # the slice reached the last account; the next starts from the first


def _next_accounts(session: Session, after: str, limit: int) -> list[tuple[str, int]]:
    return [tuple(r) for r in session.execute(text(
        "SELECT a.user_id, coalesce(t.entries, 0) FROM accounts a LEFT JOIN account_totals t USING (user_id) "
        "WHERE a.user_id > :after ORDER BY a.user_id LIMIT :n"), {"after": after, "n": limit})]


def _check(session: Session, accounts: list[tuple[str, int]], report: AuditReport) -> None:
    ids = [user_id for user_id, _ in accounts]
    # The statement's estimates are large, so PostgreSQL JIT-compiles it: 1.7 s of 3.1 s for a
    # page holding a 1M-entry account (bench.dashboard's data), for a plan that runs once.
    session.execute(text("SET LOCAL jit = off"))
    found = [Mismatch(*row) for row in session.execute(_COMPARE, {"ids": ids})]
    report.accounts += len(ids)
    report.entries += sum(n for _, n in accounts)
    report.mismatches += found
    bad = sorted({m.user_id for m in found})
    # Open mismatches are what the metric credits_audit_mismatches counts: cleared when clean.
    session.execute(text("DELETE FROM audit_mismatches WHERE user_id = ANY(:ids) "
                         "AND user_id <> ALL(CAST(:bad AS text[]))"), {"ids": ids, "bad": bad})
    for user_id in bad:
        first = next(m for m in found if m.user_id == user_id)
        session.execute(text(
            "INSERT INTO audit_mismatches (user_id, ledger, stored) VALUES (:u, CAST(:l AS jsonb), CAST(:s AS jsonb)) "
            "ON CONFLICT (user_id) DO UPDATE SET found_at = now(), ledger = excluded.ledger, stored = excluded.stored"),
            {"u": user_id, "l": _json(first.ledger), "s": _json(first.stored)})
    for m in found:
        log.error("ledger audit: %s of %s differs from the ledger", m.part, m.user_id,
                  extra={"user_id": m.user_id, "ledger": m.ledger, "stored": m.stored})


def _json(value: dict[str, Any] | None) -> str | None:
    import json

    return None if value is None else json.dumps(value, default=str)


def audit_all(page: int = PAGE) -> AuditReport:
    """Every account, `page` at a time by user id."""
    report, after = AuditReport(wrapped=True), ""
    while True:
        with session_scope() as session:
            accounts = _next_accounts(session, after, page)
            if not accounts:
                return report
            _check(session, accounts, report)
        after = accounts[-1][0]


def audit_slice(max_entries: int, page: int = PAGE) -> AuditReport:
    """The accounts after the cursor until their entries reach max_entries (at least one
    account), then the cursor moves past them; after the last account it starts again."""
    report = AuditReport()
    with session_scope() as session:
        session.execute(text("INSERT INTO audit_cursor DEFAULT VALUES ON CONFLICT DO NOTHING"))
        after = session.execute(text("SELECT after_user_id FROM audit_cursor FOR UPDATE")).scalar_one()
        while True:
            accounts = _next_accounts(session, after, page)
            chosen, total = [], 0
            for user_id, n in accounts:
                if (chosen or report.accounts) and report.entries + total + n > max_entries:
                    break
                chosen.append((user_id, n))
                total += n
            if chosen:
                _check(session, chosen, report)
                after = chosen[-1][0]
            if len(chosen) < len(accounts) or report.entries >= max_entries:
                break
            if len(accounts) < page:  # reached the end
                report.wrapped, after = True, ""
                break
        session.execute(text(
            "UPDATE audit_cursor SET after_user_id = :a, passes = passes + :w, updated_at = now()"),
            {"a": after, "w": int(report.wrapped)})
    return report


def log_report(report: AuditReport) -> None:
    level = logging.ERROR if report.mismatches else logging.INFO
    log.log(level, "ledger audit: accounts=%d entries=%d mismatches=%d", report.accounts, report.entries,
            len(report.mismatches), extra={"accounts": report.accounts, "entries": report.entries,
                                           "mismatches": len(report.mismatches)})
