"""The balance read of an account that holds expiring credit, whose savings are replayed.

Such an account's savings_usd is grant_burn's time-ordered replay (migrations 0008, 0009). 0009
replays usage a segment between two grant events at a time (account_usage_segments); this
measures account_balances for accounts of 1,000 and 1,000,000 usage entries over 30 days, each
with a payment and an expiring promo, and, as the limit it replaced, 0008's replay of every
entry for the big one, in the same run.

    uv run python -m bench.expiring_savings [--reps 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from importlib import import_module

import psycopg

from bench import common

SIZES = {"1k": 1_000, "1M": 1_000_000}
BY_ENTRY = import_module("migrations.versions.0008_credit_tools").GRANT_BURN.replace(
    "CREATE FUNCTION grant_burn(", "CREATE OR REPLACE FUNCTION pg_temp.grant_burn_by_entry(", 1)
SAVINGS = "SELECT sum(CASE WHEN b.credit > 0 THEN b.used * (1 - b.paid / b.credit) END) FROM {fn}(%s, now()) b"


def populate(conn: psycopg.Connection) -> None:
    for name, n in SIZES.items():
        user = f"exp-{name}"
        conn.execute("INSERT INTO accounts (user_id, key_alias, key_hash, key_encrypted, key_status) "
                     "VALUES (%s, %s, %s, 'unused', 'active')", (user, f"bench-{user}", f"hash-{user}"))
        conn.execute("INSERT INTO ledger_entries (user_id, kind, idempotency_key, grant_key, credit_usd, paid_usd, "
                     "occurred_at) VALUES (%s, 'payment', %s, %s, 2000000, 1000000, '2026-10-01')",
                     (user, f"payment:{user}", f"payment:{user}"))
        conn.execute("INSERT INTO ledger_entries (user_id, kind, idempotency_key, grant_key, credit_usd, occurred_at, "
                     "expires_at) VALUES (%s, 'promo', %s, %s, 50, '2026-10-02 10:30', '2026-10-20 12:15')",
                     (user, f"promo:{user}", f"promo:{user}"))
        conn.execute("INSERT INTO ledger_entries (user_id, kind, idempotency_key, spent_usd, occurred_at) "
                     "SELECT %s, 'usage', %s || g, 0.001, timestamptz '2026-10-01' + g * (interval '30 days' / %s) "
                     "FROM generate_series(1, %s) g", (user, f"spend:{user}:", n, n))
        conn.commit()
    conn.execute("ANALYZE")
    conn.commit()


def timed(conn: psycopg.Connection, sql: str, params: tuple, reps: int) -> dict[str, float]:
    conn.execute(sql, params).fetchone()  # warm
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        conn.execute(sql, params).fetchone()
        times.append((time.perf_counter() - t) * 1000)
    return {"mean_ms": round(statistics.fmean(times), 3), "p99_ms": round(common.percentile(times, 99), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    run = common.Run("expiring_savings")
    common.configure("http://127.0.0.1:9", "sk-unused")
    common.reset_database()
    url = common.database_url().replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        populate(conn)
    figures: dict = {"reads": {}}
    with psycopg.connect(url, autocommit=True) as conn:
        for name in SIZES:
            figures["reads"][name] = timed(conn, "SELECT * FROM account_balances WHERE user_id = %s",
                                           (f"exp-{name}",), args.reps)
        conn.execute(BY_ENTRY)
        figures["by_entry_1M"] = timed(conn, SAVINGS.format(fn="pg_temp.grant_burn_by_entry"), ("exp-1M",), 3)
        same = [conn.execute(SAVINGS.format(fn=fn), ("exp-1M",)).fetchone()[0]
                for fn in ("grant_burn", "pg_temp.grant_burn_by_entry")]
    figures["same_savings"] = same[0] == same[1]
    ratio = figures["reads"]["1M"]["mean_ms"] / figures["reads"]["1k"]["mean_ms"]
    table = [(f"account_balances, {name} usage entries, expiring credit", f"{r['mean_ms']} ms", f"p99 {r['p99_ms']} ms")
             for name, r in figures["reads"].items()]
    table.append(("0008's replay of every entry, 1M (the savings alone)", f"{figures['by_entry_1M']['mean_ms']} ms",
                  f"p99 {figures['by_entry_1M']['p99_ms']} ms"))
    table.append(("1M / 1k", round(ratio, 2), "target <= 2 (accounts without expiring credit: bench.dashboard)"))
    run.write(figures, table, ("read", "mean", "detail"),
              notes=[f"each account: a payment, a promo expiring on 2026-10-20, usage over 30 days (720 hours); "
                     f"{args.reps} reads each; the segment and the entry-by-entry replays agree: "
                     f"{figures['same_savings']}"])


if __name__ == "__main__":
    main()
