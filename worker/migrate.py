"""Apply Alembic migrations programmatically (used by `litellm-credits run`/`migrate` and tests)."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from worker.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent


def create_database_if_missing(database_url: str) -> None:
    """A first local run should not need a hand-made database."""
    url = make_url(database_url)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{url.database}"')


def upgrade(database_url: str | None = None) -> None:
    url = database_url or get_settings().database_url
    create_database_if_missing(url)
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = url
    command.upgrade(config, "head")  # one linear chain: a second head is an error to fix, not to run
