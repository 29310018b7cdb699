"""The direct source end to end: rows from a table shaped like the proxy's "LiteLLM_SpendLogs" into
spend_logs and the ledger by `worker.spend.sync.sync()`, against a bare COPY of the same rows.

    uv run python -m bench.spend_direct [--sizes 100000,1000000] [--step-ms 400] [--profile]

The source is a bench database (BENCH_DB_NAME + `_litellm`) holding the real proxy's table: its DDL
(column types, indexes) is copied by pg_dump from the real proxy's database (REAL_LITELLM_DB,
../shared/litellm-real), so the direct source's keyset reads meet the proxy's own index. At each
size, rows of bench.spend_rows (one every `--step-ms` on average, over 10,000 bench accounts, one in
ten on a key that is not ours, one in fifty a failed call with spend 0) are COPYed into it, with a
small metadata object (the direct source never reads metadata). Then, on a freshly migrated bench
database holding the 10,000 accounts:

- bare COPY: `COPY (SELECT <the columns the direct source selects> ...) TO STDOUT` from the
  source, streamed into `COPY spend_logs FROM STDIN`: the limit for moving these rows at all.
- ours: `sync()` with LITELLM_DATABASE_URL pointing at the source, in a fresh child process (its
  peak RSS is its own): every window read, verified by a count(*), debited, spend_daily kept,
  the alert check made; default window, page and settle settings.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench import common, litellm_table
from bench.spend_rows import History

REAL_DB = os.environ.get("REAL_LITELLM_DB", "postgresql://litellm:litellm@127.0.0.1:5432/litellm_real")
SOURCE_DB = common.BENCH_DB + "_litellm"
T0 = datetime(2025, 1, 6, tzinfo=UTC)
SETTLE_S = 120  # the default
# What worker/spend/direct.py selects, in the order spend_logs takes them (the bare COPY's rows).
SELECT = ('SELECT request_id, api_key, coalesce(nullif(model_group, \'\'), model), spend, prompt_tokens, '
          'completion_tokens, status, "startTime" FROM "LiteLLM_SpendLogs" ORDER BY "startTime", request_id')
INTO = "COPY spend_logs (request_id, api_key, model, spend, prompt_tokens, completion_tokens, status, start_time) " \
       "FROM STDIN"


def source_url(driver: bool = False) -> str:
    url = common.database_url(SOURCE_DB)
    return url if driver else url.replace("postgresql+psycopg://", "postgresql://")


def prepare_source() -> None:
    with psycopg.connect(common.PG_ADMIN_URL, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (SOURCE_DB,)).fetchone():
            conn.execute(f'CREATE DATABASE "{SOURCE_DB}"')
    litellm_table.copy_ddl(REAL_DB, source_url())


def fill_source(history: History) -> float:
    with psycopg.connect(source_url(), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {litellm_table.TABLE}")
    t = time.perf_counter()
    litellm_table.load(source_url(), history, "bench12-direct-")
    elapsed = time.perf_counter() - t
    with psycopg.connect(source_url(), autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {litellm_table.TABLE}")  # as autovacuum would have long since
    return elapsed


def bare_copy() -> dict[str, Any]:
    """The same rows, source table to spend_logs, by COPY out and COPY in (no dedupe, no ledger)."""
    dest = common.database_url().replace("postgresql+psycopg://", "postgresql://")
    t = time.perf_counter()
    rows = 0
    with psycopg.connect(source_url()) as src, psycopg.connect(dest) as dst:
        dst.execute("SET TIME ZONE 'UTC'")  # the proxy's naive startTime is UTC
        with src.cursor() as out, dst.cursor() as into:
            with out.copy(f"COPY ({SELECT}) TO STDOUT") as reader, into.copy(INTO) as writer:
                for chunk in reader:
                    writer.write(chunk)
            dst.commit()
            rows = dst.execute("SELECT count(*) FROM spend_logs").fetchone()[0]
    elapsed = time.perf_counter() - t
    return {"rows": rows, "elapsed_s": round(elapsed, 2), "rows_per_s": round(rows / elapsed)}


def expected(history: History) -> tuple[int, int]:
    return history.n, sum(1 for i in range(history.n) if i % 10 != 3 and i % 50 != 7)


# -- the child: our sync ---------------------------------------------------------------------------

def child(size: int, step_ms: int, accounts: int, profile: bool) -> None:
    from sqlalchemy import text

    import tasks.spend  # noqa: F401 - what a worker's pool child has loaded
    import worker.alerts.checks  # noqa: F401 - imported by the first run otherwise, inside the timing
    from worker.db import session_scope
    from worker.spend.sync import sync

    history = History(size, int(T0.timestamp() * 1000), step_ms, accounts)
    now = datetime.fromtimestamp(history.last_ms / 1000, UTC) + timedelta(seconds=SETTLE_S + 60)
    rss_before = common.rss_mb()
    prof = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if prof:
        prof.enable()
    result = sync(now=now)
    if prof:
        prof.disable()
    elapsed = time.perf_counter() - t
    peak = common.peak_rss_mb()
    with session_scope() as session:
        stored = session.execute(text("SELECT count(*) FROM spend_logs")).scalar_one()
        debits = session.execute(text("SELECT count(*) FROM ledger_entries WHERE kind = 'usage'")).scalar_one()
        windows = session.execute(text("SELECT count(*) FROM spend_windows")).scalar_one()
    figures = {"inserted": result.counts.inserted, "rows_seen": result.counts.rows_seen,
               "pages": result.counts.pages, "windows": windows, "elapsed_s": round(elapsed, 2),
               "rows_per_s": round(result.counts.inserted / elapsed), "rss_before_mb": round(rss_before, 1),
               "peak_rss_mb": round(peak, 1), "stored": [stored, debits], "expected": list(expected(history))}
    figures["complete"] = figures["stored"] == figures["expected"]
    if prof:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(30)
        figures["profile_top_cumulative"] = out.getvalue()
    print("RESULT " + json.dumps(figures), flush=True)


def ours(size: int, step_ms: int, accounts: int, profile: bool, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.spend_direct", "--child", "--size", str(size), "--step-ms", str(step_ms),
           "--accounts", str(accounts)] + (["--profile"] if profile else [])
    out = subprocess.run(cmd, cwd=common.ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=3600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        return {"error": f"exit {out.returncode}: {(out.stdout[-2000:] + out.stderr[-4000:]).strip()}"}
    return json.loads(lines[-1][len("RESULT "):])


# -- the parent --------------------------------------------------------------------------------------

def run_size(size: int, step_ms: int, accounts: int, profile: bool) -> dict[str, Any]:
    from bench.spend_ingest import prepare_database

    history = History(size, int(T0.timestamp() * 1000), step_ms, accounts)
    env = common.configure("http://127.0.0.1:9", "sk-unused", LITELLM_DATABASE_URL=source_url(),
                           SPEND_SYNC_START=(T0 - timedelta(seconds=1)).isoformat(), SPEND_SETTLE_S=str(SETTLE_S))
    r: dict[str, Any] = {"history": history.describe()}
    print(f"[{size}] loading the source table ...", flush=True)
    r["source_load_s"] = round(fill_source(history), 1)
    prepare_database(history)
    r["bare_copy_load_average"] = round(os.getloadavg()[0], 2)
    r["bare_copy"] = bare_copy()
    print(f"[{size}] bare COPY: {r['bare_copy']}", flush=True)
    prepare_database(history)
    r["ours_load_average"] = round(os.getloadavg()[0], 2)
    r["ours"] = ours(size, step_ms, accounts, profile, env)
    print(f"[{size}] ours: { {k: v for k, v in r['ours'].items() if k != 'profile_top_cumulative'} }", flush=True)
    if "rows_per_s" in r["ours"]:
        r["ratio_to_bare_copy"] = round(r["ours"]["rows_per_s"] / r["bare_copy"]["rows_per_s"], 3)
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--step-ms", type=int, default=400)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true", help="cProfile our sync; top functions in the results")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--size", type=int)
    args = parser.parse_args()
    if args.child:
        child(args.size, args.step_ms, args.accounts, args.profile)
        return
    run = common.Run("spend_direct")
    prepare_source()
    sizes = {n: run_size(n, args.step_ms, args.accounts, args.profile) for n in map(int, args.sizes.split(","))}
    report(run, sizes, args.step_ms)


def report(run: common.Run, sizes: dict[int, dict[str, Any]], step_ms: int) -> None:
    table = []
    for n, r in sizes.items():
        o, c = r["ours"], r["bare_copy"]
        table += [
            (f"{n:,}", "ours: sync() from the proxy-shaped table", f"{o.get('rows_per_s')} rows/s",
             f"{o.get('elapsed_s')} s, {o.get('windows')} windows, peak RSS {o.get('peak_rss_mb')} MB, "
             f"complete: {o.get('complete')} (load {r['ours_load_average']})" + (f"; {o['error'][:300]}"
                                                                              if "error" in o else "")),
            (f"{n:,}", "bare COPY of the same rows", f"{c['rows_per_s']} rows/s",
             f"{c['elapsed_s']} s (load {r['bare_copy_load_average']})"),
            (f"{n:,}", "ours / bare COPY", f"{r.get('ratio_to_bare_copy')}", "target >= 0.5"),
        ]
    rss = [r["ours"].get("peak_rss_mb") for r in sizes.values() if r["ours"].get("peak_rss_mb")]
    targets = {
        "rows_per_s>=30000": {n: (r["ours"].get("rows_per_s") or 0) >= 30_000 for n, r in sizes.items()},
        "ratio_to_bare_copy>=0.5": {n: (r.get("ratio_to_bare_copy") or 0) >= 0.5 for n, r in sizes.items()},
        "peak_rss_flat_within_10pct": (max(rss) / min(rss) <= 1.1) if len(rss) > 1 else None,
    }
    run.write({"sizes": sizes, "targets": targets, "step_ms": step_ms}, table, ("rows", "measure", "result", "detail"),
              [f"targets: {json.dumps(targets)}",
               f"rows: one every {step_ms} ms on average ({1000 / step_ms:g}/s) over 10,000 accounts, "
               f"{litellm_table.TABLE} with the real proxy's DDL (pg_dump of litellm_real), small metadata; "
               "windows of 300 s, settle 120 s (defaults)",
               "the source table, our database, this process and the child share one PostgreSQL and the 2 cores"])


if __name__ == "__main__":
    main()
