"""Reconcile: time to check 10,000 accounts against the stand-in proxy, and requests per account.

    uv run python -m bench.reconcile [--accounts 10000] [--drift 100]

The accounts (active keys, a signup grant and one payment each) are written in bulk and their
keys made on the stand-in proxy (its own process) before anything is timed; then `--drift` keys
get a wrong max_budget on the proxy. Timed: `worker.credits.reconcile.reconcile(fix=False)` (a report
only), then `reconcile(fix=True)` (which repairs the drifted keys), then a second fix pass that
finds nothing. Requests are counted by the stand-in, by endpoint; SQL statements by SQLAlchemy.
"""

from __future__ import annotations

import argparse
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import event, insert

from bench import common


def populate(base_url: str, n: int) -> list[str]:
    """n active accounts with a grant of 2 and a payment credit of 10; keys made on the proxy."""
    from worker.credits import keys
    from worker.db import session_scope
    from worker.models import Account, LedgerEntry

    now = datetime.now(UTC)
    users = [f"rc-{i:06d}" for i in range(n)]
    plain = {u: keys.new_key() for u in users}
    headers = {"Authorization": f"Bearer {common.STANDIN_KEY}"}

    def make_keys(chunk: list[str]) -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as c:
            for u in chunk:
                c.post("/key/generate", json={"key": plain[u], "key_alias": keys.alias_for(u), "user_id": u,
                                              "max_budget": 12.0}).raise_for_status()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(make_keys, [users[i::4] for i in range(4)]))
    with session_scope() as session:
        session.execute(insert(Account), [
            {"user_id": u, "key_alias": keys.alias_for(u), "key_hash": keys.key_hash(plain[u]),
             "key_encrypted": keys.encrypt(plain[u]), "key_status": "active",
             "budget_pushed_usd": Decimal(12), "budget_pushed_at": now} for u in users])
        session.execute(insert(LedgerEntry), [
            {"user_id": u, "kind": "grant", "idempotency_key": f"signup:{u}", "grant_key": f"signup:{u}",
             "credit_usd": Decimal(2), "paid_usd": Decimal(0), "spent_usd": Decimal(0), "occurred_at": now}
            for u in users] + [
            {"user_id": u, "kind": "payment", "idempotency_key": f"payment:bench:{u}",
             "grant_key": f"payment:bench:{u}", "credit_usd": Decimal(10), "paid_usd": Decimal(5),
             "spent_usd": Decimal(0), "occurred_at": now,
             "details": {"provider": "bench", "reference": u, "currency": "USD", "amount_minor": 500}}
            for u in users])
    return users


def drift(base_url: str, users: list[str], n: int) -> list[str]:
    from worker.db import session_scope
    from worker.models import Account

    chosen = random.Random(7).sample(users, n)
    with session_scope() as session:
        hashes = dict(session.query(Account.user_id, Account.key_hash).filter(Account.user_id.in_(chosen)))
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {common.STANDIN_KEY}"}) as c:
        for u in chosen:
            c.post("/key/update", json={"key": hashes[u], "max_budget": 3.5}).raise_for_status()
    return chosen


def timed(base_url: str, fix: bool, n: int, statements: list[int]) -> dict[str, Any]:
    from worker.credits.reconcile import reconcile

    httpx.post(f"{base_url}/_bench/reset", timeout=5)
    statements[0] = 0
    t = time.perf_counter()
    report = reconcile(fix=fix)
    elapsed = time.perf_counter() - t
    counts = httpx.get(f"{base_url}/_bench/requests", timeout=5).json()
    total = sum(counts.values())
    return {
        "fix": fix, "checked": report.checked, "drifted": len(report.drifted), "fixed": report.fixed,
        "errors": len(report.errors), "elapsed_s": round(elapsed, 3),
        "accounts_per_s": round(report.checked / elapsed, 1),
        "ms_per_account": round(1000 * elapsed / max(1, report.checked), 3),
        "requests": counts, "requests_per_account": round(total / max(1, report.checked), 4),
        "sql_statements_per_account": round(statements[0] / max(1, report.checked), 2),
        "peak_rss_mb": round(common.peak_rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--drift", type=int, default=100)
    args = parser.parse_args()
    run = common.Run("reconcile")
    procs = common.Procs()
    try:
        port = common.free_port()
        base_url = f"http://127.0.0.1:{port}"
        procs.standin(port)
        common.configure(base_url, common.STANDIN_KEY)
        common.reset_database()
        t = time.perf_counter()
        users = populate(base_url, args.accounts)
        drift(base_url, users, args.drift)
        print(f"populated {len(users)} accounts in {time.perf_counter() - t:.1f}s", flush=True)
        from worker.db import engine

        statements = [0]

        def count(*_: Any) -> None:
            statements[0] += 1

        event.listen(engine(), "before_cursor_execute", count)
        passes = [timed(base_url, False, args.accounts, statements)]
        passes.append(timed(base_url, True, args.accounts, statements))
        passes.append(timed(base_url, True, args.accounts, statements))
        for p in passes:
            print(p, flush=True)
    finally:
        procs.stop_all()
    names = ["report only (fix=False)", f"fix=True, {args.drift} drifted", "fix=True again, nothing to fix"]
    table = [(name, p["checked"], p["elapsed_s"], p["accounts_per_s"], p["requests_per_account"],
              ", ".join(f"{k} {v}" for k, v in sorted(p["requests"].items())), p["sql_statements_per_account"],
              p["drifted"], p["fixed"])
             for name, p in zip(names, passes, strict=True)]
    run.write({"accounts": args.accounts, "drifted": args.drift, "passes": passes}, table,
              ("pass", "accounts", "seconds", "accounts/s", "requests/account", "requests", "SQL/account",
               "drifted", "fixed"),
              ["reconcile runs in the bench process, as the ops.reconcile task would in a worker; the stand-in "
               "proxy runs in its own process; PostgreSQL shares the 2 cores"])


if __name__ == "__main__":
    main()
