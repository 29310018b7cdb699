"""Fixtures behind tests/conftest.py (kept apart so conftest stays the environment set-up)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import text

from tests.conftest import MASTER_KEY, PG_ADMIN_URL, PROXY_PORT, TEST_DB, TEST_ENV
from tests.standin.proxy import StandInProxy
from tests.waiting import wait_for  # noqa: F401 - re-exported for the tests

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[None]:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (TEST_DB,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DB}"')
        conn.execute(f'CREATE DATABASE "{TEST_DB}"')
    from worker.migrate import upgrade

    upgrade()
    yield
    from worker.db import dispose_engine

    dispose_engine()


@pytest.fixture(scope="session")
def standin() -> Iterator[StandInProxy]:
    proxy = StandInProxy(master_key=MASTER_KEY, port=PROXY_PORT).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(standin: StandInProxy) -> Iterator[StandInProxy]:
    standin.reset()
    if standin.server is None:
        standin.start()
    yield standin
    standin.mode = "ok"
    if standin.server is None:
        standin.start()


@pytest.fixture
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(TEST_ENV["REDIS_URL"])


@pytest.fixture(autouse=True)
def clean(database: None) -> Iterator[None]:
    from worker.db import session_scope

    with session_scope() as session:
        tables = session.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
        ).scalars().all()
        session.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
    redis.Redis.from_url(TEST_ENV["REDIS_URL"]).flushdb()
    from worker.settings import get_settings

    get_settings.cache_clear()
    yield


class Workers:
    """Real `celery worker` processes on the test Redis, started and killed by tests."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, concurrency: int = 1, queues: str = "signups,payments,spend,periodic",
              env: dict[str, str] | None = None, beat: bool = False) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        log = self.tmp / f"worker-{n}.log"
        offset = log.stat().st_size if log.exists() else 0
        cmd = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", queues,
               "-c", str(concurrency), "-n", f"w{n}-{os.getpid()}@%h", "--without-mingle", "--without-gossip",
               "-l", "INFO"]
        if beat:
            cmd += ["-B", "-s", str(self.tmp / f"beat-{n}")]
        full_env = {**os.environ, **TEST_ENV, **(env or {})}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        self.logs.append(log)
        def ready() -> bool:
            return " ready." in log.read_text(errors="replace")[offset:] or proc.poll() is not None

        wait_for(ready, 60, "worker to be ready")
        if proc.poll() is not None:
            raise AssertionError(f"worker exited: {log.read_text()[-3000:]}")
        return proc

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)
        self.procs.clear()


@pytest.fixture
def workers(tmp_path: Path, proxy: StandInProxy) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture
def unmigrated() -> Iterator[str]:
    """DATABASE_URL of an empty database: reachable, never migrated."""
    name = f"{TEST_DB}_unmigrated"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield TEST_ENV["DATABASE_URL"].rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
