"""The dashboard's reads, exactly as docs/dashboard.md shows them for node-postgres: right answers, and the
index that serves each (EXPLAIN).

The tables here are small, where the planner rightly prefers a sequential scan; enable_seqscan
and enable_bitmapscan are off so EXPLAIN shows whether an index can serve the query's shape at
all (a row comparison the index cannot take, or an order it does not give, would still show as a
Filter or a Sort). At a million entries the planner picks these plans by itself:
bench/results/dashboard.md records them.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from schemas.events import SignupEvent
from tests.readme_blocks import bind_names, dashboard_reads
from tests.spend_helpers import BASE, account
from tests.standin.proxy import token
from worker.credits import ledger
from worker.credits.signup import apply_signup
from worker.db import session_scope
from worker.spend.ingest import write_page
from worker.spend.rows import Row

READS = dashboard_reads()
# What serves each read, and what must not appear in its plan.
INDEXES = {
    "balance": ({"accounts_pkey", "account_totals_pkey", "account_grants_consumed_idx"}, {"ledger_entries", "Sort"}),
    "savings": ({"account_totals_pkey", "account_grants_consumed_idx"}, {"ledger_entries", "Sort"}),
    "accounts page": ({"accounts_pkey", "account_totals_pkey", "account_grants_consumed_idx"},
                      {"ledger_entries", "Sort"}),
    # Sorted after the index range scan: only the rows asked for (model is nullif(model, '') in the view).
    "usage": ({"spend_daily_pkey", "(day >= "}, {"spend_logs", "Seq Scan"}),
    "history, first page": ({"ledger_entries_history_idx"}, {"Sort", "Filter"}),
    "history, next page": ({"ledger_entries_history_idx"}, {"Sort", "Filter"}),
}


def run(name: str, *params):
    with session_scope() as session:
        return session.execute(text(bind_names(READS[name])),
                               {f"p{i}": p for i, p in enumerate(params, 1)}).mappings().all()


def plan(name: str, *params) -> str:
    with session_scope() as session:
        session.execute(text("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off"))
        rows = session.execute(text("EXPLAIN " + bind_names(READS[name])),
                               {f"p{i}": p for i, p in enumerate(params, 1)}).scalars().all()
    return "\n".join(rows)


@pytest.fixture
def history():
    """dash: a grant, then 3 days x 2 models of usage with a failed call each day; ann: a grant."""
    for user_id in ("ann", "dash"):
        account(user_id, f"sk-{user_id}")
        with session_scope() as session:
            apply_signup(session, SignupEvent(user_id=user_id, occurred_at=BASE))
    for day in range(3):
        at = BASE + timedelta(days=day)
        rows = [Row(f"d{day}-{m}-{i}", token("sk-dash"), m, Decimal("0.1"), 10, 5, "success", at + timedelta(seconds=i))
                for m in ("gpt-a", "gpt-b") for i in range(2)]
        rows.append(Row(f"d{day}-fail", token("sk-dash"), "gpt-a", Decimal(0), 3, 0, "failure", at))
        with session_scope() as session:
            write_page(session, rows)


def test_the_readme_names_every_read():
    assert set(READS) == set(INDEXES)


def test_balance_and_savings(history):
    (row,) = run("balance", "dash")
    with session_scope() as session:
        assert dict(row) == vars(ledger.balance(session, "dash"))
    assert row["spent_usd"] == Decimal("1.2") and row["savings_usd"] == Decimal("1.2")  # all of it free
    assert run("savings", "dash") == [{"savings_usd": Decimal("1.2")}]


def test_accounts_are_listed_a_page_at_a_time(history):
    seen, after = [], ""
    while page := run("accounts page", after, 1):
        seen += [r["user_id"] for r in page]
        after = page[-1]["user_id"]
    assert seen == ["ann", "dash"]


def test_usage_over_a_date_range_with_failures_apart(history):
    first = BASE.date() + timedelta(days=1)
    rows = run("usage", "dash", first, first + timedelta(days=5))
    assert [(r["day"], r["model"], r["requests"], r["failed_requests"]) for r in rows] == [
        (first, "gpt-a", 2, 1), (first, "gpt-b", 2, 0),
        (first + timedelta(days=1), "gpt-a", 2, 1), (first + timedelta(days=1), "gpt-b", 2, 0)]
    assert rows[0]["spend_usd"] == Decimal("0.2") and rows[0]["prompt_tokens"] == 23


def test_history_pages_walk_every_entry_once_newest_first(history):
    with session_scope() as session:
        expected = session.execute(text(
            "SELECT id FROM ledger_entries WHERE user_id = 'dash' ORDER BY occurred_at DESC, id DESC")).scalars().all()
    page = run("history, first page", "dash", 5)
    seen = [r["id"] for r in page]
    while page := run("history, next page", "dash", 5, seen[-1]):
        seen += [r["id"] for r in page]
    assert seen == expected and len(seen) == 13  # the grant and 12 successful calls (failures cost nothing)


@pytest.mark.parametrize("name", sorted(INDEXES))
def test_each_read_is_served_by_its_index(history, name):
    params = {"balance": ("dash",), "savings": ("dash",), "accounts page": ("", 50),
              "usage": ("dash", date(2026, 11, 20), date(2026, 11, 30)), "history, first page": ("dash", 50),
              "history, next page": ("dash", 50, 5)}[name]
    shown = plan(name, *params)
    used, banned = INDEXES[name]
    assert all(index in shown for index in used), shown
    assert not any(word in shown for word in banned), shown
