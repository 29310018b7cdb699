"""The checks that stop the worker and `run` at start, with one line on stderr naming the setting
to fix or the command to run (exit 2): better than a traceback, and better than a worker that
dead-letters every signup because the proxy refuses its master key.

Fatal: a secret the worker needs is missing; signing is off without ALLOW_UNSIGNED_EVENTS=true;
the database is unreachable or not migrated to the head; the proxy refuses the master key. A
proxy that is down is not fatal (tasks retry until it is back): a warning, logged once the worker
is ready, as is running unsigned."""

from __future__ import annotations

import sys

import psycopg
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from worker.preflight import config
from worker.preflight.database import database
from worker.preflight.findings import first_line, safe_url, warn
from worker.preflight.proxy import client_for, key_accepted, unreachable
from worker.settings import Settings, get_settings

# Set once this process has passed the checks (`run` checks before it starts its worker), and
# what to log when the worker is ready.
passed = False
warnings: list[str] = []


def problems(s: Settings, *, migrating: bool) -> tuple[list[str], list[str]]:
    """(what stops the start, what to warn of); with `migrating`, the database is left to the
    migration. Every check runs, so that one line can name every setting to fix."""
    missing = config.missing_secrets(s)
    if missing:
        return [f"invalid settings: {name} is not set; the worker needs it" for name in missing], []
    found = [] if migrating else [database(s.database_url)]
    assert s.litellm_master_key is not None
    with client_for(s.litellm_base_url, s.litellm_master_key.get_secret_value(), s.proxy_timeout_s) as client:
        down = unreachable(client)
        # A proxy that is down is not fatal: every task retries with backoff until it is back.
        found.append(warn("proxy", f"{down.detail}; tasks wait for it") if down else key_accepted(client))
    found += [config.signing(s), config.samples(s)]
    fatal = [f.detail for f in found if f.level == "fail"]
    return ([f"error: {'; also: '.join(fatal)}"] if fatal else []), [f.detail for f in found if f.level == "warn"]


def refuse(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(2)


def require(*, migrating: bool = False) -> None:
    """Exit 2 with one line when a fatal check fails; keep the warnings for the log."""
    global passed
    if passed:
        return
    refusals, found = problems(get_settings(), migrating=migrating)
    if refusals:
        refuse(refusals[0])
    warnings[:] = found
    passed = True


def migrate() -> None:
    """Migrate to the head, or exit 2 with one line naming DATABASE_URL."""
    from worker.migrate import upgrade

    url = get_settings().database_url
    try:
        upgrade(url)
    except (psycopg.OperationalError, OperationalError) as exc:
        refuse(f"error: cannot migrate {safe_url(url)} ({first_line(exc)}); check DATABASE_URL and that PostgreSQL "
               "is running")
    except (psycopg.Error, SQLAlchemyError) as exc:
        refuse(f"error: migrating {safe_url(url)} failed: {first_line(exc)}")
