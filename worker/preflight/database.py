"""PostgreSQL: reachable at DATABASE_URL, and migrated to the code's head."""

from __future__ import annotations

import psycopg
from alembic.config import Config
from alembic.script import ScriptDirectory

from worker.migrate import ROOT
from worker.preflight.findings import Finding, fail, first_line, ok, safe_url, warn

MIGRATE = "run `litellm-credits migrate`"


def head() -> str:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, f"the migrations have {len(heads)} heads"
    return heads[0]


def known(revision: str) -> bool:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    return ScriptDirectory.from_config(config).get_revision(revision) is not None


def revision(database_url: str) -> str | None:
    """The database's alembic revision (None before the first migration); raises psycopg's
    OperationalError when the server cannot be reached or the database does not exist."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return row[0] if row else None


def database(database_url: str) -> Finding:
    where = safe_url(database_url)
    try:
        current = revision(database_url)
    except psycopg.OperationalError as exc:
        reason = first_line(exc)
        if "does not exist" in reason:
            return fail("database", f"{where}: the database does not exist; {MIGRATE} (it creates it), or fix "
                                    "DATABASE_URL")
        return fail("database", f"cannot connect to {where} ({reason}); check DATABASE_URL and that "
                                "PostgreSQL is running")
    except psycopg.Error as exc:
        return fail("database", f"{where}: {first_line(exc)}; check DATABASE_URL")
    target = head()
    if current == target:
        return ok("database", f"{where} reachable, migrated to the head ({target})")
    if current is None:
        return fail("database", f"{where} has no tables of ours (never migrated); {MIGRATE}")
    if not known(current):
        # Newer code has migrated it: this (older) code may still work, but say so.
        return warn("database", f"{where} is at migration {current}, which this version does not know "
                                f"(its head is {target}); is this worker older than the database?")
    return fail("database", f"{where} is at migration {current}, not the head {target}; {MIGRATE}")
