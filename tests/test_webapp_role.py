"""The web app's read-only role, created exactly as the docs write it, reads every column of every
view it is told to read, for accounts of every kind (issue 20, 7: account_balances called
grant_burn with the caller's rights, and failed for an account with expiring credit)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from tasks.credit_tools import adjustment
from tasks.signup import signup
from tests.conftest import PG_ADMIN_URL, TEST_DB
from worker.credits import ledger
from worker.credits.expiry import expire_due
from worker.db import session_scope
from worker.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 1, 10, tzinfo=UTC)
# The documented grant, wherever the docs keep it: `GRANT SELECT ON <relations> TO <role>`.
GRANT = re.compile(r"GRANT SELECT ON ((?:\w+,\s*)*\w+)\s+TO\s+(\w+)")


def documented_grant() -> tuple[list[str], str]:
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for found in GRANT.finditer(doc.read_text()):
            relations = [r.strip() for r in found.group(1).split(",")]
            if "account_balances" in relations:
                return relations, found.group(2)
    raise AssertionError("no documented `GRANT SELECT ON ... account_balances ... TO <role>` in README.md or docs/")


@pytest.fixture
def web_role() -> str:
    relations, role = documented_grant()
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{TEST_DB}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {role}" if conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() else "SELECT 1")
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON {', '.join(relations)} TO {role}")
    yield role
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def test_the_documented_role_reads_every_view_for_every_kind_of_account(monkeypatch, proxy, web_role):
    monkeypatch.setenv("SIGNUP_CREDIT_EXPIRES_DAYS", "1")
    get_settings.cache_clear()
    for user in ("plain", "expiring", "adjusted"):
        signup.apply(kwargs={"event": {"user_id": user, "occurred_at": T0.isoformat()}})
    adjustment.apply(kwargs={"event": {"user_id": "adjusted", "amount_usd": "3", "reason": "goodwill",
                                       "reference": "adj-1", "actor": "ops", "occurred_at": T0.isoformat()}})
    with session_scope() as session:
        ledger.record(session, user_id="expiring", kind="usage", idempotency_key="spend:r1",
                      spent=Decimal("0.5"), occurred_at=T0 + timedelta(hours=1))
        session.execute(text("INSERT INTO spend_sync_cursor (position, origin) VALUES (:p, :p) "
                             "ON CONFLICT (id) DO UPDATE SET position = :p"), {"p": T0 + timedelta(days=2)})
    expire_due()

    relations, role = documented_grant()
    url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgres@", f"{role}@") + f"/{TEST_DB}"
    with psycopg.connect(url) as conn:
        for relation in relations:
            conn.execute(f"SELECT * FROM {relation}").fetchall()  # every column, every row
        rows = dict(conn.execute("SELECT user_id, savings_usd FROM account_balances").fetchall())
        # And it may write nothing.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE accounts SET email = 'x'")
    assert rows["expiring"] == Decimal("0.5") and rows["adjusted"] == Decimal(0)
