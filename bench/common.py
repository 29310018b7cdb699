"""What every benchmark shares: its own database and Redis db, stand-in processes, workers, results.

A bench never touches the databases or Redis dbs the tests use: it works in BENCH_DB_NAME
(default credits_bench, dropped and re-created each run) and Redis db BENCH_REDIS_DB (default 9).
Results go to bench/results/<name>.json and .md with the core count, the date, the load average
when the run started (other work on the machine makes figures noisy) and the command.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.waiting import wait_for  # noqa: F401 - the benches await conditions like the tests

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOGS = ROOT / "bench" / "results" / "logs"
BENCH_DB = os.environ.get("BENCH_DB_NAME", "credits_bench")
BENCH_REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "9"))
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST = os.environ.get("BENCH_REDIS_HOST", "127.0.0.1:6379")
STANDIN_KEY = "sk-master-bench-7d1e"
# Fixed, so worker subprocesses and the bench decrypt each other's keys; bench data only.
BENCH_FERNET_KEY = "YmVuY2gtb25seS1ub3QtYS1zZWNyZXQtMDEyMzQ1Njc="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(name: str = BENCH_DB) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"


def configure(base_url: str, master_key: str, alias_prefix: str = "bench-", **extra: str) -> dict[str, str]:
    """Point this process's settings at the bench database, Redis db and proxy; returns the env
    to hand to worker subprocesses."""
    env = {
        "DATABASE_URL": database_url(),
        "REDIS_URL": f"redis://{REDIS_HOST}/{BENCH_REDIS_DB}",
        "LITELLM_BASE_URL": base_url,
        "LITELLM_MASTER_KEY": master_key,
        "KEY_ENCRYPTION_KEY": BENCH_FERNET_KEY,
        "KEY_ALIAS_PREFIX": alias_prefix,
        "LOG_LEVEL": "WARNING",
        "ALERT_WEBHOOK_URL": "",
        # Unsigned, as the figures so far were measured (a bench that signs passes the secret in extra).
        "ALLOW_UNSIGNED_EVENTS": "true",
        **extra,
    }
    os.environ.update(env)
    os.environ.pop("EVENT_SIGNING_SECRET", None)
    from worker import db, proxy
    from worker.settings import get_settings

    get_settings.cache_clear()
    db.dispose_engine()
    proxy.reset_client()
    return env


def reset_database() -> None:
    """Drop and re-create the bench database at the newest migration."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (BENCH_DB,))
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}"')
    from worker.db import dispose_engine
    from worker.migrate import upgrade

    dispose_engine()
    upgrade(database_url())


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(f"redis://{REDIS_HOST}/{BENCH_REDIS_DB}").flushdb()


def wait_http(url: str, timeout: float = 30) -> None:
    def up() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    wait_for(up, timeout, f"{url} to answer", interval=0.1)


class Procs:
    """Subprocesses started by a bench, each in its own session; stopped by their own ids."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        LOGS.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, cmd: Sequence[str], env: dict[str, str] | None = None,
              cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        log = LOGS / f"{name}.log"
        proc = subprocess.Popen(list(cmd), cwd=cwd, env={**os.environ, **(env or {})},
                                stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def standin(self, port: int) -> subprocess.Popen[bytes]:
        proc = self.start("standin", [sys.executable, "-m", "bench.standin", "--port", str(port),
                                      "--master-key", STANDIN_KEY])
        wait_http(f"http://127.0.0.1:{port}/health")
        return proc

    def worker(self, name: str, env: dict[str, str], queues: str = "payments", concurrency: int = 1,
               loglevel: str = "INFO", cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        """A worker running the code in `cwd` (another checkout measures the code before a change)."""
        cmd = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", queues, "-c", str(concurrency),
               "-n", f"{name}-{os.getpid()}@%h", "--without-mingle", "--without-gossip", "-l", loglevel]
        # INFO: the level a deployment runs at, and the one that logs "ready." and task run times.
        proc = self.start(name, cmd, {**env, "LOG_LEVEL": "INFO"}, cwd=cwd)
        log: Path = proc.log  # type: ignore[attr-defined]
        wait_for(lambda: " ready." in log.read_text(errors="replace") or proc.poll() is not None, 90,
                 f"worker {name} to be ready", interval=0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"worker {name} exited: {log.read_text()[-3000:]}")
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)


def peak_rss_mb(pid: int | None = None) -> float:
    """VmHWM: the most resident memory the process has had, in MB."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def rss_mb(pid: int | None = None) -> float:
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * p // 100)))
    return ordered[int(rank) - 1]


class Run:
    """Context of one bench run: machine facts at the start, then `write` at the end."""

    def __init__(self, name: str, result_name: str | None = None):
        self.name = result_name or name  # the results' file name (e.g. a --real run beside the stand-in's)
        self.started = dt.datetime.now(dt.UTC)
        self.load_start = os.getloadavg()
        self.command = f"uv run python -m bench.{name}" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")

    def machine(self) -> dict[str, Any]:
        return {
            "cpu_count": os.cpu_count(),
            "date": self.started.isoformat(timespec="seconds"),
            "load_average_at_start": [round(x, 2) for x in self.load_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgres": _server_version(),
            "commit": _commit(),
        }

    def write(self, figures: dict[str, Any], table: list[tuple[Any, ...]], headers: tuple[str, ...],
              notes: Sequence[str] = ()) -> dict[str, Any]:
        RESULTS.mkdir(parents=True, exist_ok=True)
        machine = self.machine()
        result = {"bench": self.name, "command": self.command, "machine": machine,
                  "duration_s": round((dt.datetime.now(dt.UTC) - self.started).total_seconds(), 1),
                  "figures": figures, "notes": list(notes)}
        (RESULTS / f"{self.name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        lines = [
            f"# bench.{self.name}",
            "",
            f"`{self.command}` on {machine['cpu_count']} cores, {machine['date']}, commit {machine['commit']}, "
            f"load average at start {machine['load_average_at_start'][0]} "
            f"(end {machine['load_average_at_end'][0]}).",
            "",
            "| " + " | ".join(headers) + " |",
            "| " + " | ".join("---" for _ in headers) + " |",
        ]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table]
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        (RESULTS / f"{self.name}.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return result


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "") if out.returncode == 0 else None
    except OSError:
        return None


def _server_version() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else None
    except Exception:  # noqa: BLE001 - informational only
        return None
