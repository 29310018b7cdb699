"""Bytes per proxied request across our tables and their indexes, with every spend_logs row kept
and after retention (worker/spend/retention.py) has deleted the rows older than its cutoff.

    uv run python -m bench.spend_storage [--rows 1000000] [--accounts 10000]

`--rows` rows (bench/spend_rows.py: one in ten on a key not ours, one in fifty a failed call) are
written with worker.spend.ingest.write_page, 5,000 a page, as the sync writes them: spend_logs,
the ledger's usage entries, spend_daily and the running totals. Sizes are pg_total_relation_size
(table, TOAST and indexes) after VACUUM FULL, so deleted rows do not count. Then the spend cursor
is put a month after the last row, as a worker would be a month later, `spend.retention` runs,
and the sizes are taken again: what every request keeps for good (its usage entry, its share of
a daily_usage row) against what it kept before (its spend_logs row besides).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

os.environ.setdefault("BENCH_DB_NAME", "credits_bench_storage")

from bench import common  # noqa: E402
from bench.spend_ingest import history_for, prepare_database  # noqa: E402

PAGE = 5000


def sizes() -> dict[str, int]:
    from sqlalchemy import text

    from worker.db import engine

    with engine().connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("VACUUM FULL"))
        rows = conn.execute(text("SELECT relname, pg_total_relation_size(oid) FROM pg_class "
                                 "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")).all()
    return {name: size for name, size in rows if size > 8192 * 3}


def write(history: Any) -> float:
    from worker.db import session_scope
    from worker.spend import rows
    from worker.spend.ingest import write_page

    started = time.perf_counter()
    for lo in range(0, history.n, PAGE):
        page = []
        for i in range(lo, min(history.n, lo + PAGE)):
            r = history.row(i)
            page.append(rows.Row(r.request_id, r.api_key, r.model, rows.money(Decimal(str(r.spend))),
                                 r.prompt_tokens, r.completion_tokens, r.status,
                                 datetime.fromtimestamp(r.start_ms / 1000, UTC)))
        with session_scope() as session:
            write_page(session, page)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    args = parser.parse_args()
    run = common.Run("spend_storage")
    common.configure("http://127.0.0.1:9", "sk-unused-bench")
    history = history_for(args.rows, args.accounts)
    prepare_database(history)
    seconds = write(history)
    before = sizes()
    from sqlalchemy import text

    from worker.db import session_scope
    from worker.spend import retention

    last = datetime.fromtimestamp(history.last_ms / 1000, UTC)
    with session_scope() as session:
        session.execute(text("INSERT INTO spend_sync_cursor (position, origin) VALUES (:p, :p) "
                             "ON CONFLICT (id) DO UPDATE SET position = :p"), {"p": last + timedelta(days=30)})
    began = time.perf_counter()
    deleted = retention.delete_old()
    delete_s = time.perf_counter() - began
    after = sizes()
    n = args.rows
    names = sorted(set(before) | set(after), key=lambda t: -before.get(t, 0))
    table = [(name, round(before.get(name, 0) / n, 1), round(after.get(name, 0) / n, 1)) for name in names]
    table.append(("all our tables", round(sum(before.values()) / n, 1), round(sum(after.values()) / n, 1)))
    figures = {"rows": n, "write_s": round(seconds, 1), "deleted": deleted, "delete_s": round(delete_s, 1),
               "bytes_before": before, "bytes_after": after,
               "per_request_before": round(sum(before.values()) / n, 1),
               "per_request_after": round(sum(after.values()) / n, 1)}
    run.write(figures, table, ("table (with TOAST and indexes)", "bytes/request, every row kept",
                               "bytes/request after retention"), [
        f"{n:,} rows written in {seconds:.1f} s with write_page ({PAGE:,} a page); {deleted:,} spend_logs rows "
        f"deleted by spend.retention in {delete_s:.1f} s (batches of {retention.BATCH:,}, at most "
        f"{retention.MOST_BATCHES} a run)",
        "after retention: the spend cursor a month past the last row, so every row is older than "
        "SPEND_LOGS_KEEP_DAYS (7); a live deployment also keeps its last 7 days of spend_logs rows",
        "sizes after VACUUM FULL (pg_total_relation_size); tables under 24 KB left out",
    ])


if __name__ == "__main__":
    main()
