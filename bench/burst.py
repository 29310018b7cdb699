"""A burst of new users: each a signup and one 5 USD payment, all pushed at once.

    uv run python -m bench.burst [--users 300] [--real] [--before PATH]

One worker as `litellm-credits run` starts it (2 processes, queues signups and payments) takes
the burst; timed from the first event pushed until every account is active with the ledger's
12 USD pushed. Proxy calls are the worker's own count (its metrics, credits_proxy_request_seconds
by endpoint). With --before PATH (a checkout of the code before the change, e.g. a `git worktree
add --detach`), the same burst is run first with a worker of that code. --real uses the real
LiteLLM proxy on 127.0.0.1:4000 (keys under this run's own alias prefix, deleted afterwards);
otherwise the stand-in proxy, in its own process.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

import httpx

from bench import common, real_keys

AT = "2026-11-20T10:00:00Z"


def proxy_calls(port: int) -> dict[str, int]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = re.findall(r'credits_proxy_request_seconds_count\{endpoint="([^"]+)"\} ([0-9.e+]+)', text)
    return {endpoint: int(float(n)) for endpoint, n in found}


def done(prefix: str) -> int:
    from sqlalchemy import text

    from worker.db import session_scope

    with session_scope() as session:
        return session.execute(text(
            "SELECT count(*) FROM accounts WHERE key_alias LIKE :p AND key_status = 'active' AND budget_pushed_usd = 12"
        ), {"p": prefix + "%"}).scalar_one()


def burst(label: str, code: Path, base_url: str, master_key: str, users: int, real: bool) -> dict[str, Any]:
    prefix = real_keys.run_prefix("burst") if real else f"burst-{label}-"
    metrics_port = common.free_port()
    env = common.configure(base_url, master_key, alias_prefix=prefix, METRICS_PORT=str(metrics_port),
                           PROXY_TIMEOUT_S="60")
    common.reset_database()
    common.flush_redis()
    from worker.producer import publish_payment, publish_signup

    procs = common.Procs()
    try:
        procs.worker(f"burst-{label}", env, queues="signups,payments", concurrency=2, cwd=code)
        before = proxy_calls(metrics_port)
        started = time.perf_counter()
        for n in range(users):
            user = f"u{n:05d}"
            publish_signup({"user_id": user, "occurred_at": AT})
            publish_payment({"reference": f"{label}-{user}", "user_id": user, "amount_minor": 500,
                             "currency": "USD", "paid_at": AT})
        pushed = time.perf_counter() - started
        common.wait_for(lambda: done(prefix) == users, 900, "every account active at 12", interval=0.2)
        elapsed = time.perf_counter() - started
        calls = {k: v - before.get(k, 0) for k, v in proxy_calls(metrics_port).items() if v - before.get(k, 0)}
    finally:
        procs.stop_all()
        if real:
            print("deleted", real_keys.delete_prefix(base_url, master_key, prefix), "burst keys", flush=True)
    writes = sum(v for k, v in calls.items() if k in ("/key/generate", "/key/update", "/key/bulk_update"))
    return {"label": label, "code": str(code), "users": users, "push_s": round(pushed, 2),
            "elapsed_s": round(elapsed, 2), "users_per_s": round(users / elapsed, 1), "proxy_calls": calls,
            "write_calls_per_user": round(writes / users, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--real", action="store_true", help=f"the real proxy at {real_keys.REAL_URL}")
    parser.add_argument("--before", type=Path, help="a checkout of the code before the change")
    args = parser.parse_args()
    run = common.Run("burst", "burst_real" if args.real else None)
    procs = common.Procs()
    try:
        if args.real:
            base_url, master_key = real_keys.REAL_URL, real_keys.REAL_KEY
        else:
            port = common.free_port()
            base_url, master_key = f"http://127.0.0.1:{port}", common.STANDIN_KEY
            procs.standin(port)
        runs = []
        if args.before:
            runs.append(burst("before", args.before.resolve(), base_url, master_key, args.users, args.real))
            print(runs[-1], flush=True)
        runs.append(burst("after", common.ROOT, base_url, master_key, args.users, args.real))
        print(runs[-1], flush=True)
    finally:
        procs.stop_all()
    where = "the real LiteLLM proxy (1.106.2, one uvicorn worker)" if args.real else "the stand-in proxy (own process)"
    table = [(r["label"], r["users"], r["elapsed_s"], r["users_per_s"], r["write_calls_per_user"],
              ", ".join(f"{k} {v}" for k, v in sorted(r["proxy_calls"].items()))) for r in runs]
    run.write({"users": args.users, "proxy": where, "runs": runs}, table,
              ("code", "users", "seconds", "users/s", "key writes/user", "proxy calls"),
              [f"one worker, 2 processes, queues signups and payments, against {where}; each user a signup and "
               "a 5 USD payment, all pushed at once (the push is inside the time); done = every account active "
               "with 12 USD pushed", "key writes/user = (/key/generate + /key/update + /key/bulk_update) / users",
               "PostgreSQL, Redis and the proxy share the 2 cores with other work (load average above)"])


if __name__ == "__main__":
    main()
