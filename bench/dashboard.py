"""The dashboard's reads at 1k, 100k and 1M ledger entries per account, side by side.

    uv run python -m bench.dashboard [--reps 400] [--crowd 999]

Each read is docs/dashboard.md's SQL for node-postgres, sent as written
($1 placeholders, psycopg's RawCursor, an unnamed statement each time as node-postgres sends it)
on one connection: reads/s (one after the other, the three sizes taking turns) and p99. The
data goes in through plain INSERTs into ledger_entries, so the running totals are made by the
trigger, as for every writer: three
accounts with 1,000, 100,000 and 1,000,000 usage entries (after a signup grant, 20 payments and
a refund, so the savings lookup lands among the grants) and a crowd of `--crowd` accounts with
1,000 each; spend_daily holds 365 days x 3 models for each heavy account. Then ANALYZE.

Beside them, the same balance read through account_balances as 0001-0006 defined it (summed
from the ledger at query time, created here as the view account_balances_before), and its list of
all accounts; EXPLAIN (ANALYZE, BUFFERS) of every read at 1M; and what the trigger costs the
spend ingest: 1,000-row pages through worker.spend.ingest.write_page with the trigger and, last
of all, with it disabled; and the audit (worker/credits/audit.py) of everything, and of one
reconcile's slice.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import import_module
from typing import Any

import psycopg

from bench import common
from tests.readme_blocks import dashboard_reads

SIZES = {"1k": 1_000, "100k": 100_000, "1M": 1_000_000}
START = datetime(2025, 12, 1, tzinfo=UTC)
YEAR_S = 365 * 86400


def pg_url() -> str:
    return common.database_url().replace("+psycopg", "")


def populate(conn: psycopg.Connection, crowd: int) -> dict[str, str]:
    users = {size: f"heavy-{size}" for size in SIZES}
    names = list(users.values()) + [f"crowd-{i:04d}" for i in range(crowd)]
    conn.execute(
        "INSERT INTO accounts (user_id, key_alias, key_hash, key_encrypted, key_status) "
        "SELECT u, 'bench-' || u, encode(sha256(('sk-' || u)::bytea), 'hex'), 'unused', 'active' "
        "FROM unnest(%s::text[]) u",
        (names,))
    # Grants: the signup's 2 free, 20 payments of 10 credit for 5, the first refunded in part.
    conn.execute(
        "INSERT INTO ledger_entries (user_id, kind, idempotency_key, grant_key, credit_usd, occurred_at) "
        "SELECT u, 'grant', 'signup:' || u, 'signup:' || u, 2, %s FROM unnest(%s::text[]) u", (START, names))
    conn.execute(
        "INSERT INTO ledger_entries (user_id, kind, idempotency_key, grant_key, credit_usd, paid_usd, occurred_at) "
        "SELECT u, 'payment', 'payment:bench:' || u || ':' || k, 'payment:bench:' || u || ':' || k, 10, 5, "
        "       %s + k * interval '1 day' FROM unnest(%s::text[]) u, generate_series(1, 20) k", (START, names))
    conn.execute(
        "INSERT INTO ledger_entries (user_id, kind, idempotency_key, grant_key, credit_usd, paid_usd, occurred_at) "
        "SELECT u, 'refund', 'refund:bench:' || u, 'payment:bench:' || u || ':1', -4, -2, %s + interval '2 days' "
        "FROM unnest(%s::text[]) u", (START, names))
    conn.commit()
    # Usage spread over a year, 100 USD in all per account: about half of its 202 credited.
    plan = [(users[s], n) for s, n in SIZES.items()] + [(u, 1_000) for u in names[len(users):]]
    for user_id, n in plan:
        for lo in range(0, n, 250_000):
            hi = min(n, lo + 250_000)
            conn.execute(
                "INSERT INTO ledger_entries (user_id, kind, idempotency_key, spent_usd, occurred_at) "
                "SELECT %(u)s::text, 'usage', 'spend:' || %(u)s::text || ':' || g, %(each)s, "
                "       %(start)s + (g::bigint * %(year)s / %(n)s) * interval '1 second' "
                "FROM generate_series(%(lo)s, %(hi)s - 1) g",
                {"u": user_id, "each": Decimal(100) / n, "start": START, "year": YEAR_S, "n": n, "lo": lo, "hi": hi})
            conn.commit()
    conn.execute(
        "INSERT INTO spend_daily (user_id, day, model, requests, failed_requests, prompt_tokens, completion_tokens, "
        "spend_usd) SELECT u, %s::date + d, m, 100, 3, 20000, 9000, 0.25 "
        "FROM unnest(%s::text[]) u, generate_series(0, 364) d, unnest(ARRAY['gpt-a', 'gpt-b', 'gpt-c']) m",
        (START.date(), list(users.values())))
    before = import_module("migrations.versions.0001_ledger").BALANCES_VIEW
    conn.execute(before.replace("CREATE VIEW account_balances", "CREATE VIEW account_balances_before"))
    conn.commit()
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE")
    return users


def timed(cur: psycopg.Cursor, sql: str, cases: dict[str, list[Any]], reps: int) -> dict[str, dict[str, float]]:
    """Each case's latencies, the cases taking turns (a, b, c, a, b, c, ...) so that a change of
    load on the shared machine falls on all of them alike."""
    times: dict[str, list[float]] = {case: [] for case in cases}
    warm = min(10, reps)
    for rep in range(reps + warm):
        for case, params in cases.items():
            t0 = time.perf_counter()
            cur.execute(sql, params, prepare=False)
            cur.fetchall()
            if rep >= warm:
                times[case].append((time.perf_counter() - t0) * 1000)
    return {case: {"reads_per_s": round(1000 / statistics.fmean(t), 1), "mean_ms": round(statistics.fmean(t), 3),
                   "p50_ms": round(common.percentile(t, 50), 3), "p99_ms": round(common.percentile(t, 99), 3),
                   "reps": reps} for case, t in times.items()}


def explain(cur: psycopg.Cursor, sql: str, params: list[Any]) -> str:
    cur.execute("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, SUMMARY OFF) " + sql, params, prepare=False)
    return "\n".join(r[0] for r in cur.fetchall())


def ingest_cost(with_trigger: str, without: str, pages: int) -> dict[str, dict[str, float]]:
    """Median ms of one 1,000-row spend page through the real ingest statement, on one account
    with the totals trigger and on another with it disabled, taking turns. Run last: the pages
    written without the trigger leave that account's totals behind its ledger."""
    from worker.db import session_scope
    from worker.spend.ingest import write_page
    from worker.spend.rows import Row

    times: dict[str, list[float]] = {with_trigger: [], without: []}
    at = datetime.now(UTC)
    with psycopg.connect(pg_url(), autocommit=True) as admin:
        for _ in range(pages):
            for user_id in (with_trigger, without):
                key = hashlib.sha256(f"sk-{user_id}".encode()).hexdigest()  # the key_hash populate gave it
                rows = [Row(f"ingest-{user_id}-{time.time_ns()}-{i}", key, "gpt-a", Decimal("0.001"), 10, 5,
                            "success", at + timedelta(milliseconds=i)) for i in range(1000)]
                if user_id == without:
                    admin.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_totals")
                t0 = time.perf_counter()
                with session_scope() as session:
                    write_page(session, rows)
                times[user_id].append((time.perf_counter() - t0) * 1000)
                if user_id == without:
                    admin.execute("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_totals")
    return {name: {"median_ms": round(statistics.median(times[u]), 2), "pages": pages}
            for name, u in (("with_trigger", with_trigger), ("without_trigger", without))}


def audit_cost() -> dict[str, Any]:
    """litellm-credits audit over everything, and one reconcile's slice at the default budget."""
    from worker.credits.audit import audit_all, audit_slice
    from worker.settings import get_settings

    t0 = time.perf_counter()
    full = audit_all()
    full_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    part = audit_slice(get_settings().audit_entries_per_reconcile)
    return {"all_s": round(full_s, 2), "all_accounts": full.accounts, "all_entries": full.entries,
            "all_mismatches": len(full.mismatches), "slice_s": round(time.perf_counter() - t0, 3),
            "slice_accounts": part.accounts, "slice_entries": part.entries}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--crowd", type=int, default=999)
    args = parser.parse_args()
    run = common.Run("dashboard")
    common.configure("http://127.0.0.1:9", "sk-unused")
    common.reset_database()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=common.ROOT).stdout.strip()
    t0 = time.perf_counter()
    with psycopg.connect(pg_url()) as conn:
        users = populate(conn, args.crowd)
        entries = conn.execute("SELECT count(*) FROM ledger_entries").fetchone()[0]
    populate_s = round(time.perf_counter() - t0, 1)
    reads = dashboard_reads()
    today = (START + timedelta(days=364)).date()
    figures: dict[str, Any] = {"commit": commit, "ledger_entries": entries, "populate_s": populate_s,
                               "accounts": len(users) + args.crowd, "reads": {}, "before": {}, "plans_at_1M": {}}
    with psycopg.connect(pg_url(), autocommit=True, cursor_factory=psycopg.RawCursor) as conn:
        cur = conn.cursor()
        params: dict[str, dict[str, list[Any]]] = {name: {} for name in reads}
        for size, user_id in users.items():
            middle = conn.execute(
                "SELECT id FROM ledger_entries WHERE user_id = $1 ORDER BY occurred_at DESC, id DESC "
                "OFFSET $2 LIMIT 1", [user_id, SIZES[size] // 2]).fetchone()[0]
            params["balance"][size] = params["savings"][size] = [user_id]
            params["accounts page"][size] = ["", 100]
            params["usage"][size] = [user_id, today - timedelta(days=29), today]
            params["history, first page"][size] = [user_id, 50]
            params["history, next page"][size] = [user_id, 50, middle]
        for name, sql in reads.items():
            figures["reads"][name] = timed(cur, sql, params[name], args.reps)
            figures["plans_at_1M"][name] = explain(cur, sql, params[name]["1M"])
            print(name, "done", flush=True)
        figures["before"] = timed(cur, "SELECT * FROM account_balances_before WHERE user_id = $1",
                                  {size: [user_id] for size, user_id in users.items()}, 5)
        figures["before_all_accounts"] = timed(cur, "SELECT * FROM account_balances_before", {"all": []}, 1)["all"]
        figures["all_accounts_paged"] = timed(
            cur, "SELECT * FROM account_balances WHERE user_id > $1 ORDER BY user_id LIMIT $2",
            {"all": ["", 100_000]}, 3)["all"]
    figures["audit"] = audit_cost()
    figures["ingest_page_ms"] = ingest_cost(users["1M"], users["100k"], 20)
    balance = figures["reads"]["balance"]
    ratio = balance["1M"]["mean_ms"] / balance["1k"]["mean_ms"]
    figures["balance_1M_over_1k"] = round(ratio, 2)
    table = []
    for name, by_size in figures["reads"].items():
        table.append((name, *[x for s in SIZES for x in (by_size[s]["reads_per_s"], by_size[s]["p99_ms"])],
                      round(by_size["1M"]["mean_ms"] / by_size["1k"]["mean_ms"], 2)))
    b = figures["before"]
    table.append(("balance before (0001-0006 view)",
                  *[x for s in SIZES for x in (b[s]["reads_per_s"], b[s]["p99_ms"])],
                  round(b["1M"]["mean_ms"] / b["1k"]["mean_ms"], 2)))
    headers = ("read (README SQL)", *[f"{s} {m}" for s in SIZES for m in ("reads/s", "p99 ms")], "1M / 1k mean")
    ing = figures["ingest_page_ms"]
    notes = [
        f"commit {commit}; {entries:,} ledger entries over {figures['accounts']:,} accounts, "
        f"populated in {populate_s} s (plain INSERTs, totals by the trigger); --reps {args.reps}.",
        f"balance at 1M: mean {balance['1M']['mean_ms']} ms, p99 {balance['1M']['p99_ms']} ms "
        f"(target <= 5 ms); 1M / 1k mean {ratio:.2f} (target <= 2).",
        f"before (0001-0006 view, same data, same run): balance mean {b['1k']['mean_ms']} ms at 1k, "
        f"{b['100k']['mean_ms']} ms at 100k, {b['1M']['mean_ms']} ms at 1M; all {figures['accounts']:,} accounts "
        f"unpaged {figures['before_all_accounts']['mean_ms']} ms, against "
        f"{figures['all_accounts_paged']['mean_ms']} ms for all of them through the new view.",
        "accounts page: 100 accounts (keyset by user_id, the first page); usage: 30 days x 3 models; "
        "history: 50 entries, the first page and one after the middle entry (keyset by id).",
        f"spend ingest, one 1,000-row page through write_page: median {ing['with_trigger']['median_ms']} ms with "
        f"the totals trigger, {ing['without_trigger']['median_ms']} ms with it disabled "
        f"({ing['with_trigger']['pages']} pages each, taking turns).",
        f"audit: all {figures['audit']['all_entries']:,} entries of {figures['audit']['all_accounts']:,} accounts "
        f"in {figures['audit']['all_s']} s ({figures['audit']['all_mismatches']} mismatches); one reconcile's slice "
        f"(AUDIT_ENTRIES_PER_RECONCILE default) {figures['audit']['slice_entries']:,} entries of "
        f"{figures['audit']['slice_accounts']:,} accounts in {figures['audit']['slice_s']} s.",
        "EXPLAIN (ANALYZE, BUFFERS) of each read at 1M: figures.plans_at_1M in dashboard.json.",
    ]
    run.write(figures, table, headers, notes)


if __name__ == "__main__":
    main()
