"""Spend sync against the real LiteLLM proxy: rows per second, and the share of the time spent
waiting on the proxy's pages.

    uv run python -m bench.spend_real [--rows 50000]

Needs ../shared/litellm-real running (REAL_LITELLM_URL, default http://127.0.0.1:4000, master key
REAL_LITELLM_KEY, default sk-master-1234) and its database (REAL_LITELLM_DB, default
postgresql://litellm:litellm@127.0.0.1:5432/litellm_real). `--rows` rows in the real row shape
(bench/spend_rows.py: 2.5 a second, over 10,000 bench accounts, one in ten on a key not ours) are
COPYed straight into its "LiteLLM_SpendLogs", in an hour range of 2025 that holds no other row,
with request ids starting `benchreal-`; then `worker.spend.sync.sync()` reads them through the
proxy's /spend/logs/v2 into the bench database; then every `benchreal-` row is deleted again.

Waiting on the proxy is the summed duration of the page requests (worker.proxy observers: request
sent to body received); our overhead is the rest of the run's wall time (decoding, writing,
committing, the alert check), as a share of the waiting.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from bench import common
from bench.spend_rows import History

REAL_URL = os.environ.get("REAL_LITELLM_URL", "http://127.0.0.1:4000")
REAL_KEY = os.environ.get("REAL_LITELLM_KEY", "sk-master-1234")
REAL_DB = os.environ.get("REAL_LITELLM_DB", "postgresql://litellm:litellm@127.0.0.1:5432/litellm_real")
T0 = datetime(2025, 3, 2, 4, 0, tzinfo=UTC)  # a quiet range: nothing else is logged there
STEP_MS = 400
SETTLE_S = 120
PREFIX = "benchreal-"
COLUMNS = ("request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens", "completion_tokens",
           "startTime", "endTime", "completionStartTime", "model", "model_id", "model_group", "custom_llm_provider",
           "api_base", "user", "metadata", "cache_hit", "cache_key", "request_tags", "team_id", "end_user",
           "requester_ip_address", "session_id", "status", "organization_id", "agent_id", "request_duration_ms",
           "litellm_call_id")
JSONB = {"metadata", "request_tags"}
TIMES = {"startTime", "endTime", "completionStartTime"}


def insert_rows(history: History, run: str) -> float:
    """COPY the history into the real proxy's table; returns seconds taken."""
    started = time.perf_counter()
    quoted = ", ".join(f'"{c}"' for c in COLUMNS)
    with psycopg.connect(REAL_DB) as conn, conn.cursor() as cur:
        with cur.copy(f'COPY "LiteLLM_SpendLogs" ({quoted}) FROM STDIN') as copy:
            for i in range(history.n):
                row = json.loads(history.row_json(i))
                row["request_id"] = f"{PREFIX}{run}-{i:07d}"
                values = []
                for c in COLUMNS:
                    v = row.get(c)
                    if c in JSONB:
                        v = json.dumps(v)
                    elif c in TIMES and v is not None:
                        v = datetime.fromisoformat(v).astimezone(UTC).replace(tzinfo=None)
                    values.append(v)
                copy.write_row(values)
        conn.commit()
    return time.perf_counter() - started


def delete_rows() -> int:
    with psycopg.connect(REAL_DB) as conn:
        deleted = conn.execute('DELETE FROM "LiteLLM_SpendLogs" WHERE request_id LIKE %s', (PREFIX + "%",)).rowcount
        conn.commit()
    return deleted


def prepare_accounts(history: History) -> None:
    from sqlalchemy import insert

    from bench.spend_rows import bench_key
    from worker.credits import keys
    from worker.db import session_scope
    from worker.models import Account

    common.reset_database()
    with session_scope() as session:
        session.execute(insert(Account), [
            {"user_id": f"u-{k}", "key_alias": f"bench-u-{k}", "key_hash": history.hashes[k],
             "key_encrypted": keys.encrypt(bench_key(k)), "key_status": "active"}
            for k in range(history.accounts)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    args = parser.parse_args()
    run = common.Run("spend_real")
    try:
        httpx.get(f"{REAL_URL}/health/liveliness", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise SystemExit(f"the real proxy is not reachable at {REAL_URL}: {exc}") from None
    history = History(args.rows, int(T0.timestamp() * 1000), STEP_MS, args.accounts)
    tag = uuid.uuid4().hex[:6]
    common.configure(REAL_URL, REAL_KEY, SPEND_SYNC_START=(T0 - timedelta(seconds=1)).isoformat(),
                     SPEND_SETTLE_S=str(SETTLE_S))
    prepare_accounts(history)
    leftovers = delete_rows()
    figures: dict[str, Any] = {"history": history.describe(), "leftover_rows_deleted_first": leftovers}
    try:
        figures["insert_s"] = round(insert_rows(history, tag), 1)
        print(f"inserted {args.rows} rows into the real proxy's table in {figures['insert_s']} s", flush=True)
        figures.update(measure(history))
    finally:
        figures["deleted_after"] = delete_rows()
        print(f"deleted {figures['deleted_after']} bench rows from the real proxy's table", flush=True)
    f = figures
    table = [
        ("rows synced", f"{f['inserted']:,} of {args.rows:,}", f"{f['pages']} pages; complete: {f['complete']}"),
        ("wall time", f"{f['elapsed_s']} s", f"{f['rows_per_s']:,} rows/s"),
        ("waiting on the proxy's pages", f"{f['waiting_s']} s", f"{f['waiting_share']:.0%} of the wall time; "
         f"{f['page_ms_median']} ms median per page request"),
        ("our overhead on top", f"{f['overhead_s']} s", f"{f['overhead_vs_waiting']:.0%} of the waiting "
         "(target at most 25%)"),
        ("no-news run after it", f"{f['no_news_ms']} ms", f"{f['no_news_rows_reread']} rows re-read (look-back)"),
    ]
    figures["targets"] = {"overhead_vs_waiting<=0.25": f["overhead_vs_waiting"] <= 0.25}
    run.write(figures, table, ("measure", "result", "detail"), [
        f"targets: {figures['targets']}",
        "the real proxy (litellm 1.106.2, PostgreSQL-backed, ../shared/litellm-real), PostgreSQL, and this "
        "process share the 2 cores",
        f"rows inserted straight into \"LiteLLM_SpendLogs\" ({figures['insert_s']} s) and deleted afterwards "
        f"({figures['deleted_after']} rows)",
    ])


def measure(history: History) -> dict[str, Any]:
    import tasks.spend  # noqa: F401 - what a worker's pool child has loaded
    import worker.alerts.checks  # noqa: F401
    from worker import proxy
    from worker.spend.sync import sync

    requests: list[float] = []

    def observe(endpoint: str, seconds: float, outcome: str) -> None:
        if endpoint.startswith("/spend/logs"):
            requests.append(seconds)

    proxy.observers.append(observe)
    now = datetime.fromtimestamp(history.last_ms / 1000, UTC) + timedelta(seconds=SETTLE_S + 60)
    t = time.perf_counter()
    result = sync(now=now)
    elapsed = time.perf_counter() - t
    waiting = sum(requests)
    page_times = sorted(requests)
    from sqlalchemy import text

    from worker.db import session_scope

    with session_scope() as session:
        stored = session.execute(text("SELECT count(*) FROM spend_logs")).scalar_one()
    requests.clear()
    t = time.perf_counter()
    again = sync(now=now + timedelta(seconds=60))
    no_news = time.perf_counter() - t
    proxy.observers.remove(observe)
    return {
        "inserted": result.counts.inserted, "debited": result.counts.debited, "pages": result.counts.pages,
        "stored": stored, "complete": stored == history.n, "elapsed_s": round(elapsed, 2),
        "rows_per_s": round(result.counts.inserted / elapsed), "waiting_s": round(waiting, 2),
        "waiting_share": round(waiting / elapsed, 3), "overhead_s": round(elapsed - waiting, 2),
        "overhead_vs_waiting": round((elapsed - waiting) / waiting, 3),
        "page_ms_median": round(1000 * page_times[len(page_times) // 2], 1) if page_times else None,
        "no_news_ms": round(no_news * 1000, 1), "no_news_rows_reread": again.counts.rows_seen,
        "peak_rss_mb": round(common.peak_rss_mb(), 1),
    }


if __name__ == "__main__":
    main()
