"""The worker's own load on a real LiteLLM proxy, and what it does to the proxy's users.

    uv run python -m bench.proxy_load [--keys 10000] [--idle-s 300] [--turn-s 40] [--backlog 20000]

Needs a real proxy of its own (not the shared one on :4000: its spend-log table is emptied
first, so the day before holds only what the run puts there), started with ../shared/litellm-real:

    env -u DATABASE_URL LITELLM_PORT=4100 LITELLM_WORK_DIR=/tmp/litellm-quiet LITELLM_DB_NAME=litellm_quiet \\
        ../shared/litellm-real/start-litellm.sh

Default settings, a full 24 h verification horizon (the windows of the last day exist, read and
recently verified, as in a worker that has run for a day), `--keys` keys of ours on the proxy
(written straight into its key table) with their accounts, and a beat plus one worker (-c 2)
running the code in `--code` (default this checkout; another directory measures other code):
1. idle, no traffic: admin requests per minute by endpoint, counted from the proxy's own access
   log, and the CPU seconds per minute of the proxy's process tree (uvicorn, the query engine);
   with --direct-too, again with LITELLM_DATABASE_URL set;
2. users' /chat/completions through the proxy (a mock model, `--rate` calls a second, open loop)
   taking turns: worker stopped, worker running idle, stopped, idle, then the worker catching up
   a `--backlog`-row backlog (rows COPYed into the proxy's spend-log table, in windows marked
   unread) through the API, then stopped again. p50 and p99 per state, and how fast the catch-up was.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("BENCH_DB_NAME", "credits_bench_quiet")
os.environ.setdefault("BENCH_REDIS_DB", "12")
os.environ.setdefault("REAL_LITELLM_DB", "postgresql://litellm:litellm@127.0.0.1:5432/litellm_quiet")

import httpx  # noqa: E402
import psycopg  # noqa: E402

from bench import (  # noqa: E402
    common,
    real_keys,
    spend_real,  # noqa: E402
)
from bench.reconcile import populate  # noqa: E402
from bench.spend_rows import History  # noqa: E402

URL = os.environ.get("LOAD_PROXY_URL", "http://127.0.0.1:4100")
KEY = os.environ.get("LOAD_PROXY_KEY", "sk-master-1234")
PROXY_DB = os.environ["REAL_LITELLM_DB"]
WORK = Path(os.environ.get("LOAD_PROXY_WORK_DIR", "/tmp/litellm-quiet"))
ADMIN = re.compile(r'"(GET|POST) (/[^? ]*)')
NOT_ADMIN = ("/chat/completions", "/health/readiness", "/health/liveliness", "/v1/chat/completions")
HORIZON = timedelta(days=1)


def proxy_cpu_s() -> float:
    """utime + stime of the proxy's process and all its descendants (the query engine too)."""
    root = int((WORK / "litellm.pid").read_text())
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += int(stats[pid][11]) + int(stats[pid][12])
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


class Meter:
    """Admin requests (from the proxy's access log) and proxy CPU between start() and stop()."""

    def start(self) -> None:
        self.log = WORK / "logs" / "litellm.log"
        self.offset = self.log.stat().st_size
        self.cpu, self.t = proxy_cpu_s(), time.monotonic()

    def stop(self) -> dict[str, Any]:
        minutes = (time.monotonic() - self.t) / 60
        cpu = proxy_cpu_s() - self.cpu
        with self.log.open("rb") as f:
            f.seek(self.offset)
            text = f.read().decode(errors="replace")
        found = Counter(m.group(2) for m in ADMIN.finditer(text) if m.group(2) not in NOT_ADMIN)
        return {"minutes": round(minutes, 2), "admin_per_min": round(sum(found.values()) / minutes, 2),
                "by_endpoint_per_min": {k: round(v / minutes, 2) for k, v in found.most_common()},
                "proxy_cpu_s_per_min": round(cpu / minutes, 2)}


class Users:
    """Open-loop /chat/completions at `rate` a second; latencies filed under the current state."""

    def __init__(self, key: str, rate: float) -> None:
        self.key, self.rate, self.state = key, rate, None
        self.latencies: dict[str, list[float]] = {}
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()

    def call(self, client: httpx.Client, state: str) -> None:
        started = time.perf_counter()
        try:
            r = client.post("/chat/completions", json={"model": "fake-gpt", "messages": [
                {"role": "user", "content": "hello"}]})
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            self.latencies.setdefault(state, []).append((time.perf_counter() - started) * 1000)
        else:
            self.errors[state] += 1

    def run(self, state: str, seconds: float, until: Any = None) -> float:
        """Traffic for `seconds` (or until `until()` is true, checked every second); returns the time taken."""
        began = time.monotonic()
        with httpx.Client(base_url=URL, headers={"Authorization": f"Bearer {self.key}"}, timeout=60,
                          limits=httpx.Limits(max_connections=32)) as client, ThreadPoolExecutor(32) as pool:
            n, next_check = 0, began + 1
            while True:
                now = time.monotonic()
                if until is None and now - began >= seconds:
                    break
                if until is not None and now >= next_check:
                    next_check = now + 1
                    if until() or now - began >= seconds:
                        break
                pool.submit(self.call, client, state)
                n += 1
                time.sleep(max(0.0, began + n / self.rate - time.monotonic()))
        return time.monotonic() - began


def prefill_windows(now: datetime) -> None:
    """A worker that has run for a day: every window of the horizon read, each verified within
    the last 8 minutes (the longest any window rests), the cursor at the frontier, reconcile's
    last pass just now."""
    from sqlalchemy import text

    from worker.db import session_scope
    from worker.spend import plan
    from worker.spend import runs as spend_runs

    with session_scope() as session:
        origin = spend_runs.ensure_cursor(session, now - HORIZON)
        plan.extend(session, origin.origin, now - timedelta(seconds=120))
        session.execute(text("UPDATE spend_windows SET read_to = end_time, reads = 1, first_read_at = :n, "
                             "verified_at = :n - random() * interval '8 minutes', source_count = 0, stored_count = 0"),
                        {"n": now})
        spend_runs.move_cursor(session, plan.frontier(session))
        # Reconcile has run too: its last full pass just now, every key change compared (code that
        # keeps no such state has no table for it).
        if session.execute(text("SELECT to_regclass('reconcile_state')")).scalar():
            session.execute(text("INSERT INTO reconcile_state (id, watermark, full_at) VALUES (true, :n, :n)"),
                            {"n": now})


def mark_unread(since: datetime) -> None:
    """The worker was down since `since`: the windows from there on are still to read."""
    from sqlalchemy import text

    from worker.db import session_scope

    with session_scope() as session:
        session.execute(text("UPDATE spend_windows SET read_to = start_time, verified_at = NULL, first_read_at = NULL "
                             "WHERE start_time >= :s"), {"s": since})
        session.execute(text("UPDATE spend_sync_cursor SET position = :s"), {"s": since})


def stored_backlog() -> int:
    from sqlalchemy import text

    from worker.db import session_scope

    with session_scope() as session:
        return session.execute(text("SELECT count(*) FROM spend_logs WHERE request_id LIKE :p"),
                               {"p": spend_real.PREFIX + "%"}).scalar_one()


def summary(values: list[float]) -> dict[str, Any]:
    return {"calls": len(values), "p50_ms": round(common.percentile(values, 50), 1),
            "p99_ms": round(common.percentile(values, 99), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--idle-s", type=float, default=300, help="the idle measure (a reconcile interval)")
    parser.add_argument("--turn-s", type=float, default=40, help="each turn of user traffic")
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=10, help="user calls a second")
    parser.add_argument("--code", default=str(common.ROOT), help="the checkout whose worker is measured")
    parser.add_argument("--warm-s", type=float, default=60, help="after a start, before the idle measure")
    parser.add_argument("--direct-too", action="store_true", help="also measure idle with LITELLM_DATABASE_URL")
    parser.add_argument("--result", default="proxy_load", help="results file name")
    args = parser.parse_args()
    run = common.Run("proxy_load", args.result)
    code = Path(args.code)
    httpx.get(f"{URL}/health/liveliness", timeout=5).raise_for_status()
    prefix = real_keys.run_prefix("pl")
    env = common.configure(URL, KEY, alias_prefix=prefix)
    env.update(EVENT_SIGNING_SECRET=secrets.token_hex(32), CREDITS_ENV_FILE="")
    common.reset_database()
    common.flush_redis()
    procs = common.Procs()
    figures: dict[str, Any] = {"keys": args.keys, "code": str(code), "code_commit": _code_commit(code)}
    if PROXY_DB.rstrip("/").endswith("/litellm_real") or URL.endswith(":4000"):
        raise SystemExit("bench.proxy_load empties its proxy's spend logs: give it a proxy of its own")
    with psycopg.connect(PROXY_DB) as conn:  # the horizon holds only what this run puts there
        figures["proxy_rows_deleted_first"] = conn.execute('DELETE FROM "LiteLLM_SpendLogs"').rowcount
    try:
        hashes = populate(URL, KEY, args.keys, PROXY_DB)
        with httpx.Client(base_url=URL, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
            user_key = c.post("/key/generate", json={"key_alias": f"{prefix}user-traffic",
                                                     "max_budget": 1e6}).json()["key"]
        now = datetime.now(UTC)
        prefill_windows(now)
        beat_db = Path(f"/tmp/proxy_load-beat-{os.getpid()}.db")

        def start(extra: dict[str, str] | None = None) -> list:
            worker = procs.worker("pl-worker", {**env, **(extra or {})}, queues="periodic,spend,payments,signups",
                                  concurrency=2, cwd=code)
            beat = procs.start("pl-beat", [sys.executable, "-m", "celery", "-A", "worker.app", "beat",
                                           "-s", str(beat_db), "-l", "WARNING"], {**env, **(extra or {})}, cwd=code)
            return [worker, beat]

        def stop(running: list) -> None:
            for p in running:
                procs.stop(p)

        meter = Meter()
        running = start()
        time.sleep(args.warm_s)  # the first beat runs: planning, the windows due at start
        print("measuring idle", flush=True)
        meter.start()
        time.sleep(args.idle_s)
        figures["idle_api"] = meter.stop()
        print(figures["idle_api"], flush=True)
        stop(running)
        if args.direct_too:
            running = start({"LITELLM_DATABASE_URL": PROXY_DB})
            time.sleep(args.warm_s)
            meter.start()
            time.sleep(args.idle_s)
            figures["idle_direct"] = meter.stop()
            print(figures["idle_direct"], flush=True)
            stop(running)

        users = Users(user_key, args.rate)
        for _ in range(2):
            users.run("stopped", args.turn_s)
            running = start()
            users.run("idle", args.turn_s)
            stop(running)
        # The worker was down for the last 65 minutes, in which the backlog landed.
        since = datetime.now(UTC) - timedelta(minutes=65)
        step = int(50 * 60_000 / args.backlog)
        history = History(args.backlog, int((since + timedelta(minutes=1)).timestamp() * 1000), step, args.keys)
        history.__dict__["hashes"] = list(hashes.values())  # the rows are our keys' (one in ten foreign)
        spend_real.insert_rows(history, "pl")
        mark_unread(since)
        users.run("stopped", args.turn_s)
        meter.start()
        began = time.monotonic()
        running = start()
        taken = users.run("catching up", 1800, until=lambda: stored_backlog() >= args.backlog)
        figures["catch_up"] = {"rows": stored_backlog(), "seconds_from_start": round(time.monotonic() - began, 1),
                               "with_traffic_s": round(taken, 1), "admin": meter.stop()}
        c = figures["catch_up"]
        c["rows_per_s"] = round(c["rows"] / c["seconds_from_start"], 1)
        stop(running)
        users.run("stopped", args.turn_s)
        figures["users"] = {state: summary(v) for state, v in users.latencies.items()}
        figures["user_errors"] = dict(users.errors)
    finally:
        procs.stop_all()
        figures["deleted_keys"] = real_keys.sql_delete_prefix(PROXY_DB, prefix)
        figures["deleted_rows"] = spend_real.delete_rows()
    u = figures["users"]
    base = u["stopped"]["p99_ms"]
    table = [("admin requests/min, idle, API", figures["idle_api"]["admin_per_min"],
              ", ".join(f"{k} {v}" for k, v in figures["idle_api"]["by_endpoint_per_min"].items()) or "none"),
             ("proxy CPU s/min, idle, API", figures["idle_api"]["proxy_cpu_s_per_min"], "")]
    if "idle_direct" in figures:
        d = figures["idle_direct"]
        table += [("admin requests/min, idle, LITELLM_DATABASE_URL", d["admin_per_min"],
                   ", ".join(f"{k} {v}" for k, v in d["by_endpoint_per_min"].items()) or "none"),
                  ("proxy CPU s/min, idle, LITELLM_DATABASE_URL", d["proxy_cpu_s_per_min"], "")]
    for state in ("stopped", "idle", "catching up"):
        s = u.get(state, {"calls": 0, "p50_ms": float("nan"), "p99_ms": float("nan")})
        table.append((f"users' p50 / p99 ms, worker {state}", f"{s['p50_ms']} / {s['p99_ms']}",
                      f"{s['calls']} calls; p99 {s['p99_ms'] / base:.2f} x stopped"))
    c = figures["catch_up"]
    table.append(("catch-up through the API", f"{c['rows_per_s']} rows/s",
                  f"{c['rows']:,} rows in {c['seconds_from_start']} s; "
                  f"{c['admin']['admin_per_min']} admin requests/min"))
    figures["targets"] = {"idle_api_admin_per_min<=5": figures["idle_api"]["admin_per_min"] <= 5,
                          "catch_up_p99<=1.25x_stopped": u.get("catching up", {"p99_ms": 1e9})["p99_ms"] <= 1.25 * base}
    run.write(figures, table, ("measure", "result", "detail"), [
        f"code measured: {figures['code_commit'] or figures['code']}",
        f"targets: {figures['targets']}",
        f"{args.keys:,} keys of ours written into the proxy's key table; a full 24 h horizon of windows, read and "
        "verified within 8 minutes; default settings; a beat and one worker (-c 2)",
        f"users: {args.rate} calls/s of a mock model; turns of {args.turn_s} s: stopped, idle, stopped, idle, "
        "stopped, catching up (until the backlog is stored), stopped",
        "the proxy (litellm 1.106.2, 1 uvicorn worker, its own database), PostgreSQL, Redis, the worker and this "
        "process share the 2 cores with other engineers' work: see the load averages",
    ])


def _code_commit(code: Path) -> str | None:
    marker = code / "COMMIT"
    return marker.read_text().strip() if marker.exists() else common._commit()


if __name__ == "__main__":
    main()
