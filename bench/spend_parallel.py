"""Parallel windows: how fast 1, 2 and 4 real worker processes read a backlog of spend windows from
a real LiteLLM proxy running several workers of its own.

    uv run python -m bench.spend_parallel [--rows 20000] [--step-ms 400] [--workers 1,2,4]

Needs a second real proxy started for it (not the shared one on port 4000):

    env -u DATABASE_URL TIMEOUT_WORKER_HEALTHCHECK=180 LITELLM_PORT=4001 LITELLM_WORK_DIR=/tmp/litellm-bench12 \\
        LITELLM_DB_NAME=litellm_bench12 LITELLM_NUM_WORKERS=2 ../shared/litellm-real/start-litellm.sh

(PARALLEL_LITELLM_URL, default http://127.0.0.1:4001; PARALLEL_LITELLM_DB its database. On a loaded
machine the proxy's own supervisor kills a worker that is still importing after uvicorn's 5 s
health check, over and over; TIMEOUT_WORKER_HEALTHCHECK gives it time.)

`--rows` rows in the real row shape (about 9.9 KB of JSON each), one every `--step-ms` (400: 750 per
window of 300 s, one page of 1,000, so a backlog of 20,000 is 27 windows), are put into the proxy's
"LiteLLM_SpendLogs" (request ids `bench12-parallel-`), ending a few minutes ago; they are deleted
afterwards. For each worker count, on a freshly migrated bench database with the 10,000 accounts:
that many `celery -A worker.app worker -Q spend -c 1` processes are started, then one `dispatch()`
(the beat's spend.sync) sends the windows, and the clock runs until every row is stored. Each
worker's log gives the spend.window tasks it ran (a task whose window another reader holds ends at
once). Default settings (window 300 s, pages of 1,000, settle 120 s).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench import common, litellm_table
from bench.spend_rows import History

PROXY_URL = os.environ.get("PARALLEL_LITELLM_URL", "http://127.0.0.1:4001")
PROXY_KEY = os.environ.get("PARALLEL_LITELLM_KEY", "sk-master-1234")
PROXY_DB = os.environ.get("PARALLEL_LITELLM_DB", "postgresql://litellm:litellm@127.0.0.1:5432/litellm_bench12")
PREFIX = "bench12-parallel-"
ACCOUNTS = 10_000
WINDOW_S = 300


def backlog(rows: int, step_ms: int) -> tuple[History, datetime]:
    """The rows, ending at least 10 minutes ago, from an aligned window start."""
    end = datetime.now(UTC) - timedelta(minutes=10)
    start = end - timedelta(milliseconds=rows * step_ms)
    start = datetime.fromtimestamp(int(start.timestamp()) // WINDOW_S * WINDOW_S, UTC)
    return History(rows, int(start.timestamp() * 1000), step_ms, ACCOUNTS), start


def measure(procs: common.Procs, history: History, start: datetime, n_workers: int) -> dict[str, Any]:
    from sqlalchemy import text

    from bench.spend_ingest import prepare_database
    from worker.db import dispose_engine, session_scope
    from worker.spend.sync import dispatch

    env = common.configure(PROXY_URL, PROXY_KEY, SPEND_SYNC_START=start.isoformat(), PROXY_TIMEOUT_S="60")
    prepare_database(history)
    common.flush_redis()
    workers = [procs.worker(f"parallel{n_workers}-{j}", env, queues="spend") for j in range(n_workers)]

    def stored() -> int:
        with session_scope() as session:
            return session.execute(text("SELECT count(*) FROM spend_logs")).scalar_one()

    load = round(os.getloadavg()[0], 2)
    t = time.perf_counter()
    sent = dispatch()
    common.wait_for(lambda: stored() >= history.n, 1800, "every backlog row stored", interval=0.2)
    elapsed = time.perf_counter() - t
    with session_scope() as session:
        seen, pages = session.execute(text(
            "SELECT coalesce(sum(rows_seen), 0), coalesce(sum(pages), 0) FROM spend_sync_runs")).one()
    for w in workers:
        procs.stop(w)
    per_worker = [len(re.findall(r"Task spend\.window\[[^]]+\] succeeded", w.log.read_text(errors="replace")))
                  for w in workers]  # type: ignore[attr-defined]
    dispose_engine()
    return {"workers": n_workers, "rows": history.n, "windows_sent": sent, "elapsed_s": round(elapsed, 2),
            "rows_per_s": round(history.n / elapsed), "rows_seen": int(seen), "pages": int(pages),
            "window_tasks_per_worker": per_worker, "load_average_at_start": load,
            "load_average_at_end": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--step-ms", type=int, default=400)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    run = common.Run("spend_parallel")
    common.configure(PROXY_URL, PROXY_KEY)  # before worker.app is imported: its broker is the bench's Redis db
    httpx.get(f"{PROXY_URL}/health/liveliness", timeout=5).raise_for_status()
    litellm_table.delete(PROXY_DB, PREFIX)
    history, start = backlog(args.rows, args.step_ms)
    t = time.perf_counter()
    litellm_table.load(PROXY_DB, history, PREFIX, full=True)
    print(f"{args.rows} rows put into the proxy's table in {time.perf_counter() - t:.1f} s", flush=True)
    procs = common.Procs()
    results = []
    try:
        for n in map(int, args.workers.split(",")):
            results.append(measure(procs, history, start, n))
            print(results[-1], flush=True)
    finally:
        procs.stop_all()
        deleted = litellm_table.delete(PROXY_DB, PREFIX)
    one = results[0]["rows_per_s"] if results else None
    table = [(r["workers"], f"{r['rows_per_s']} rows/s", f"{round(r['rows_per_s'] / one, 2) if one else None}",
              f"{r['elapsed_s']} s for {r['rows']:,} rows in {r['windows_sent']} windows, {r['pages']} pages; "
              f"spend.window tasks per worker {r['window_tasks_per_worker']}; load {r['load_average_at_start']}")
             for r in results]
    run.write({"results": results, "backlog": history.describe(), "deleted_after": deleted,
               "proxy": {"url": PROXY_URL, "num_workers": _proxy_workers()}}, table,
              ("worker processes", "throughput", "vs one", "detail"),
              [f"the proxy: litellm 1.106.2 with {_proxy_workers()} uvicorn workers (LITELLM_NUM_WORKERS), "
               f"its own database; rows in the real row shape, one every {args.step_ms} ms; default settings",
               "the proxy's workers, its query-engine shims, PostgreSQL, the spend workers and this process share "
               "the 2 cores"])


def _proxy_workers() -> int | None:
    return int(os.environ.get("PARALLEL_LITELLM_WORKERS", "2")) or None


if __name__ == "__main__":
    main()
