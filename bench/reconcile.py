"""Reconcile: time to compare 10,000 accounts with their keys, and requests per account.

    uv run python -m bench.reconcile [--accounts 10000] [--drift 100]           # the stand-in proxy
    uv run python -m bench.reconcile --real [--accounts 10000] [--drift 100]    # the real LiteLLM proxy

The accounts (active keys, a signup grant and one payment each, 12 USD) are written in bulk
and their keys made on the proxy before anything is timed: on the stand-in (its own process) by
/key/generate, on the real proxy straight into its key table (bench.real_keys), under an alias
prefix of this run's own that is deleted at the end. Then `--drift` keys get a wrong max_budget
(one /key/bulk_update) and, with --real, one key a NaN spend (an unreadable key, which must not
stop the run). Timed: reconcile(fix=False) (a report), reconcile(fix=True) (repairs), a second
fix pass that finds nothing, and with --real the same report pass reading the proxy's database
(LITELLM_DATABASE_URL). Requests are counted by endpoint in this process; SQL statements by
SQLAlchemy. The 100,000-account figure is projected from the measured rate.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import event, insert

from bench import common, real_keys


def populate(base_url: str, master_key: str, n: int, proxy_db: str | None) -> dict[str, str]:
    """n active accounts credited 12; their keys on the proxy. Returns key hash by user id."""
    from worker.credits import keys
    from worker.db import session_scope
    from worker.models import Account, LedgerEntry

    now = datetime.now(UTC)
    users = [f"rc-{i:06d}" for i in range(n)]
    plain = {u: keys.new_key() for u in users}
    if proxy_db:
        real_keys.insert_keys(proxy_db, [(keys.key_hash(plain[u]), keys.alias_for(u), u, 12.0) for u in users])
    else:
        real_keys.make_keys(base_url, master_key, [
            {"key": plain[u], "key_alias": keys.alias_for(u), "user_id": u, "max_budget": 12.0} for u in users])
    with session_scope() as session:
        session.execute(insert(Account), [
            {"user_id": u, "key_alias": keys.alias_for(u), "key_hash": keys.key_hash(plain[u]),
             "key_encrypted": keys.encrypt(plain[u]), "key_status": "active",
             "budget_pushed_usd": Decimal(12), "budget_pushed_at": now} for u in users])
        grants = [
            {"user_id": u, "kind": "grant", "idempotency_key": f"signup:{u}", "grant_key": f"signup:{u}",
             "credit_usd": Decimal(2), "paid_usd": Decimal(0), "spent_usd": Decimal(0), "occurred_at": now}
            for u in users]
        payments = [
            {"user_id": u, "kind": "payment", "idempotency_key": f"payment:bench:{u}",
             "grant_key": f"payment:bench:{u}", "credit_usd": Decimal(10), "paid_usd": Decimal(5),
             "spent_usd": Decimal(0), "occurred_at": now,
             "details": {"provider": "bench", "reference": u, "currency": "USD", "amount_minor": 500}}
            for u in users]
        # Multi-row statements: an executemany would fire the running totals' statement trigger once a row.
        for entries in (grants, payments):
            for start in range(0, len(entries), 5000):
                session.execute(insert(LedgerEntry.__table__).values(entries[start:start + 5000]))
    return {u: keys.key_hash(plain[u]) for u in users}


def drift(base_url: str, master_key: str, hashes: dict[str, str], n: int) -> list[str]:
    chosen = random.Random(7).sample(sorted(hashes), n)
    with real_keys.client(base_url, master_key) as c:
        c.post("/key/bulk_update", json={"keys": [{"key": hashes[u], "max_budget": 3.5} for u in chosen]}
               ).raise_for_status()
    return chosen


def timed(fix: bool, requests: Counter, statements: list[int], direct: str | None = None) -> dict[str, Any]:
    from worker.credits.reconcile import reconcile
    from worker.settings import get_settings

    if direct:
        import os

        os.environ["LITELLM_DATABASE_URL"] = direct
        get_settings.cache_clear()
    requests.clear()
    statements[0] = 0
    t = time.perf_counter()
    try:
        report = reconcile(fix=fix)
    finally:
        if direct:
            os.environ.pop("LITELLM_DATABASE_URL")
            get_settings.cache_clear()
    elapsed = time.perf_counter() - t
    total = sum(requests.values())
    return {
        "fix": fix, "source": "proxy database" if direct else "/key/list", "checked": report.checked,
        "drifted": len(report.drifted), "fixed": report.fixed, "key_errors": report.key_errors,
        "errors": report.errors[:3], "elapsed_s": round(elapsed, 3),
        "accounts_per_s": round(report.checked / elapsed, 1),
        "projected_100k_s": round(100_000 * elapsed / max(1, report.checked), 1),
        "requests": dict(requests), "requests_per_account": round(total / max(1, report.checked), 4),
        "sql_statements_per_account": round(statements[0] / max(1, report.checked), 3),
        "peak_rss_mb": round(common.peak_rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--drift", type=int, default=100)
    parser.add_argument("--real", action="store_true", help=f"the real proxy at {real_keys.REAL_URL}")
    parser.add_argument("--proxy-db", default=real_keys.PROXY_DB, help="the real proxy's database (--real)")
    parser.add_argument("--direct-only", action="store_true",
                        help="with --real: only the report pass reading the proxy's database (e.g. --accounts 100000)")
    args = parser.parse_args()
    name = "reconcile_real" + ("_direct" if args.direct_only else "") if args.real else None
    run = common.Run("reconcile", name)
    procs = common.Procs()
    prefix = real_keys.run_prefix("rc") if args.real else "bench-"
    try:
        if args.real:
            base_url, master_key, proxy_db = real_keys.REAL_URL, real_keys.REAL_KEY, args.proxy_db
        else:
            port = common.free_port()
            base_url, master_key, proxy_db = f"http://127.0.0.1:{port}", common.STANDIN_KEY, None
            procs.standin(port)
        common.configure(base_url, master_key, alias_prefix=prefix, PROXY_TIMEOUT_S="60")
        common.reset_database()
        t = time.perf_counter()
        hashes = populate(base_url, master_key, args.accounts, proxy_db)
        drift(base_url, master_key, hashes, args.drift)
        if proxy_db:  # one unreadable key, late in alias order
            import psycopg

            with psycopg.connect(proxy_db) as conn:
                conn.execute("""UPDATE "LiteLLM_VerificationToken" SET spend = 'NaN' WHERE token = %s""",
                             (hashes[sorted(hashes)[-10]],))
        print(f"populated {len(hashes)} accounts in {time.perf_counter() - t:.1f}s", flush=True)
        from worker import proxy
        from worker.db import engine

        statements, requests = [0], Counter()

        def count(*_: Any) -> None:
            statements[0] += 1

        event.listen(engine(), "before_cursor_execute", count)
        proxy.observers.append(lambda endpoint, _s, _o: requests.update([endpoint]))
        passes = [] if args.real and args.direct_only else [
            timed(False, requests, statements), timed(True, requests, statements), timed(True, requests, statements)]
        if proxy_db:
            passes.append(timed(False, requests, statements, direct=proxy_db))
        for p in passes:
            print(p, flush=True)
    finally:
        procs.stop_all()
        if args.real:
            print("deleted", real_keys.sql_delete_prefix(args.proxy_db, prefix), "bench keys", flush=True)
    names = ["report only (fix=False)", f"fix=True, {args.drift} drifted", "fix=True again, nothing to fix",
             "report only, proxy database"][-len(passes):]
    table = [(name, p["source"], p["checked"], p["elapsed_s"], p["accounts_per_s"], p["projected_100k_s"],
              p["requests_per_account"], ", ".join(f"{k} {v}" for k, v in sorted(p["requests"].items())),
              p["sql_statements_per_account"], p["drifted"], p["fixed"], p["key_errors"])
             for name, p in zip(names, passes, strict=False)]
    where = "the real LiteLLM proxy (1.106.2, one uvicorn worker)" if args.real else "the stand-in proxy (own process)"
    run.write({"accounts": args.accounts, "drifted": args.drift, "proxy": where, "passes": passes}, table,
              ("pass", "keys from", "accounts", "seconds", "accounts/s", "100k projected s", "requests/account",
               "requests", "SQL/account", "drifted", "fixed", "key errors"),
              [f"reconcile runs in the bench process, as the ops.reconcile task would in a worker, against {where}; "
               "PostgreSQL and the proxy share the 2 cores with other work (load average above)",
               "100k projected = 100,000 x the measured seconds per account"] +
              (["the keys were written into the proxy's LiteLLM_VerificationToken table (bench.real_keys) and "
                "deleted at the end; one key has a NaN spend (the key error), found and reported, the run going on"]
               if args.real else []))


if __name__ == "__main__":
    main()
