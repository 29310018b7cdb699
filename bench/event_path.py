"""Event path: payments per second through real Celery workers, and publish-to-push latency.

    uv run python -m bench.event_path [--payments 3000] [--rate 50] [--seconds 20] [--no-real]

Real Redis (db BENCH_REDIS_DB), real PostgreSQL (database BENCH_DB_NAME) and the stand-in proxy
in its own process. Accounts are provisioned first (signup grant, key on the proxy), so what is
timed is the payment path itself: message, ledger entry, budget push, alert check.

1. Throughput: `--payments` payments spread at random over 1,000 accounts, published as fast as
   the producer can while 1 (then 2) `celery worker -c 1` processes drain the queue; then the same
   with all payments on 10 hot accounts (many queued per account). Time from the first publish to
   the last budget push recorded in the database (accounts.budget_pushed_at). Then the capacity
   without the producer competing for the cores: `--payments` queued first, then drained by 1
   (then 2) processes told to consume at the same instant.
2. Latency at a steady `--rate` events/s for `--seconds`, one worker process: each event is the
   only payment of its account, so publish-to-push latency is that account's budget_pushed_at
   (set when the proxy has answered /key/update) minus the publish time. Then the same against
   the real proxy (LITELLM_REAL_URL, default http://127.0.0.1:4000), unless --no-real or it is down;
   the keys made there are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import text

from bench import common

ACCOUNTS = 1000
HOT_ACCOUNTS = 10
WARM_UP = 50  # payments per worker start before a latency run
REAL_URL = "http://127.0.0.1:4000"
REAL_KEY = "sk-master-1234"
# /key/update takes about 24 ms on the real proxy, so one process (about 35 ms a payment) cannot
# keep up with 50 a second; the real-proxy latency run uses two.
REAL_WORKERS = 2
# ... and then at a rate the real proxy can keep up with on this machine, for comparison.
REAL_LOW_RATE = 20
REAL_LOW_SECONDS = 20


def provision(users: list[str], threads: int = 8) -> None:
    """Signup grant and key for each user, in this process (not timed)."""
    from schemas.events import SignupEvent
    from worker.credits.accounts import sync_key
    from worker.credits.signup import apply_signup
    from worker.db import session_scope

    now = datetime.now(UTC)

    def one(user: str) -> None:
        with session_scope() as session:
            apply_signup(session, SignupEvent(user_id=user, occurred_at=now))
        sync_key(user)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, users))


def payment(user: str, reference: str) -> dict[str, Any]:
    return {"provider": "paystack", "reference": reference, "user_id": user, "amount_minor": 500,
            "currency": "USD", "paid_at": datetime.now(UTC).isoformat()}


def scalar(sql: str, **params: Any) -> Any:
    from worker.db import session_scope

    with session_scope() as session:
        return session.execute(text(sql), params).scalar()


def unpushed() -> int:
    return scalar(
        "SELECT count(*) FROM accounts a JOIN (SELECT user_id, sum(credit_usd) AS c FROM ledger_entries "
        "GROUP BY user_id) t USING (user_id) WHERE a.budget_pushed_usd IS DISTINCT FROM t.c"
    )


def task_seconds(procs: list[Any]) -> list[float]:
    """Per-task run times from the workers' 'succeeded in Xs' log lines."""
    found: list[float] = []
    for proc in procs:
        found += [float(x) for x in re.findall(r"succeeded in ([0-9.e-]+)s", proc.log.read_text(errors="replace"))]
    return found


def proxy_counts(base_url: str) -> dict[str, int]:
    return httpx.get(f"{base_url}/_bench/requests", timeout=5).json()


def throughput(procs: common.Procs, env: dict[str, str], base_url: str, n_workers: int, n_payments: int,
               users: list[str], label: str) -> dict[str, Any]:
    from worker.producer import publish_payment

    httpx.post(f"{base_url}/_bench/reset", timeout=5)
    before = scalar("SELECT count(*) FROM ledger_entries WHERE kind = 'payment'")
    workers = [procs.worker(f"{label}-w{i}", env) for i in range(n_workers)]
    rng = random.Random(n_workers * 7919 + n_payments)
    run = uuid.uuid4().hex[:8]
    t0 = time.time()
    for i in range(n_payments):
        publish_payment(payment(rng.choice(users), f"bench-{run}-{i}"))
    published = time.time()
    common.wait_for(lambda: scalar("SELECT count(*) FROM ledger_entries WHERE kind = 'payment'") - before
                    >= n_payments, 600, "payments to land", interval=0.1)
    common.wait_for(lambda: unpushed() == 0, 120, "budgets to be pushed", interval=0.1)
    last_push = scalar("SELECT extract(epoch FROM max(budget_pushed_at)) FROM accounts")
    elapsed = float(last_push) - t0
    runtimes = task_seconds(workers)
    for w in workers:
        procs.stop(w)
    counts = proxy_counts(base_url)
    # A push is one /key/update, or one /key/bulk_update for every key a batch changed.
    updates = counts.get("/key/update", 0) + counts.get("/key/bulk_update", 0)
    return {
        "workers": n_workers, "accounts": len(users), "payments": n_payments,
        "publish_s": round(published - t0, 3), "elapsed_s": round(elapsed, 3),
        "payments_per_s": round(n_payments / elapsed, 1),
        "task_mean_ms": round(1000 * sum(runtimes) / len(runtimes), 2) if runtimes else None,
        "task_p50_ms": round(1000 * common.percentile(runtimes, 50), 2) if runtimes else None,
        "key_updates": updates, "key_updates_per_payment": round(updates / n_payments, 3),
        "proxy_requests": counts,
    }


def drain(procs: common.Procs, env: dict[str, str], base_url: str, n_workers: int, n_payments: int,
          users: list[str], label: str) -> dict[str, Any]:
    """A backlog published first, then drained: the workers' capacity without the producer
    competing for the cores. The workers start on another queue and are all told at the same
    instant (remote control add_consumer) to consume payments."""
    from worker.app import app
    from worker.producer import publish_payment

    httpx.post(f"{base_url}/_bench/reset", timeout=5)
    before = scalar("SELECT count(*) FROM ledger_entries WHERE kind = 'payment'")
    rng = random.Random(n_workers * 104729 + n_payments)
    run = uuid.uuid4().hex[:8]
    for i in range(n_payments):
        publish_payment(payment(rng.choice(users), f"drain-{run}-{i}"))
    workers = [procs.worker(f"{label}-w{i}", env, queues="signups") for i in range(n_workers)]
    t0 = time.time()
    app.control.add_consumer("payments", reply=False)
    common.wait_for(lambda: scalar("SELECT count(*) FROM ledger_entries WHERE kind = 'payment'") - before
                    >= n_payments, 600, "the backlog to land", interval=0.1)
    common.wait_for(lambda: unpushed() == 0, 120, "budgets to be pushed", interval=0.1)
    elapsed = float(scalar("SELECT extract(epoch FROM max(budget_pushed_at)) FROM accounts")) - t0
    for w in workers:
        procs.stop(w)
    counts = proxy_counts(base_url)
    pushes = counts.get("/key/update", 0) + counts.get("/key/bulk_update", 0)
    return {"workers": n_workers, "accounts": len(users), "payments": n_payments, "elapsed_s": round(elapsed, 3),
            "payments_per_s": round(n_payments / elapsed, 1),
            "push_requests_per_payment": round(pushes / n_payments, 3)}


def floor(procs: common.Procs, env: dict[str, str], n: int) -> dict[str, Any]:
    """Celery alone: a no-op task through a worker configured exactly like ours (bench/noop_app.py)."""
    from worker.app import app

    cmd = [sys.executable, "-m", "celery", "-A", "bench.noop_app", "worker", "-Q", "payments", "-c", "1",
           "-n", f"noop-{os.getpid()}@%h", "--without-mingle", "--without-gossip", "-l", "INFO"]
    worker = procs.start("noop", cmd, {**env, "LOG_LEVEL": "INFO"})
    log = worker.log  # type: ignore[attr-defined]
    common.wait_for(lambda: " ready." in log.read_text(errors="replace"), 90, "no-op worker to be ready", 0.2)
    t0 = time.time()
    for i in range(n):
        app.send_task("bench.noop", kwargs={"event": {"n": i}}, queue="payments")
    published = time.time()
    common.wait_for(lambda: log.read_text(errors="replace").count("succeeded in") >= n, 300, "no-ops", 0.05)
    elapsed = time.time() - t0
    procs.stop(worker)
    return {"tasks": n, "publish_s": round(published - t0, 3), "elapsed_s": round(elapsed, 3),
            "tasks_per_s": round(n / elapsed, 1)}


def latency(procs: common.Procs, env: dict[str, str], users: list[str], rate: float, label: str,
            n_workers: int = 1) -> dict[str, Any]:
    from worker.producer import publish_payment

    workers = [procs.worker(f"{label}-w{i}", env) for i in range(n_workers)]
    run = uuid.uuid4().hex[:8]
    # Warm-up, not timed: a worker's first tasks open connections and import what they use
    # lazily, and the backlog they leave at 50/s takes seconds to drain (measured: p99 466 ms cold).
    warm = [f"warm-{run}-{i}" for i in range(WARM_UP)]
    provision(warm, threads=4)
    for i, user in enumerate(warm):
        publish_payment(payment(user, f"warm-{run}-{i}"))
    common.wait_for(lambda: unpushed() == 0 and scalar(
        "SELECT count(*) FROM ledger_entries WHERE kind = 'payment' AND user_id = ANY(:u)", u=warm) == len(warm),
        120, "warm-up payments", interval=0.1)
    published: dict[str, float] = {}
    start = time.time() + 0.5
    late = 0
    for i, user in enumerate(users):
        due = start + i / rate
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        elif pause < -0.02:
            late += 1
        published[user] = time.time()
        publish_payment(payment(user, f"lat-{run}-{i}"))
    sent = time.time() - start
    common.wait_for(lambda: unpushed() == 0 and scalar(
        "SELECT count(*) FROM ledger_entries WHERE kind = 'payment' AND user_id = ANY(:u)", u=users) == len(users),
        120, "all latency payments to be pushed", interval=0.2)
    from worker.db import session_scope

    with session_scope() as session:
        pushed = dict(session.execute(
            text("SELECT user_id, extract(epoch FROM budget_pushed_at) FROM accounts WHERE user_id = ANY(:u) "
                 "AND budget_pushed_usd = :total"), {"u": users, "total": Decimal(12)}).all())
    runtimes = task_seconds(workers)[WARM_UP:]
    for worker in workers:
        procs.stop(worker)
    lat_ms = [1000 * (float(pushed[u]) - published[u]) for u in users if u in pushed]
    timeline = [[round(published[u] - start, 3), round(1000 * (float(pushed[u]) - published[u]), 1)]
                for u in users if u in pushed]
    return {
        "workers": n_workers, "events": len(users), "target_rate_per_s": rate,
        "achieved_rate_per_s": round(len(users) / sent, 1),
        "published_late": late, "measured": len(lat_ms),
        "p50_ms": round(common.percentile(lat_ms, 50), 1), "p90_ms": round(common.percentile(lat_ms, 90), 1),
        "p99_ms": round(common.percentile(lat_ms, 99), 1), "max_ms": round(max(lat_ms), 1),
        "task_mean_ms": round(1000 * sum(runtimes) / len(runtimes), 2) if runtimes else None,
        "over_100ms": sum(1 for x in lat_ms if x > 100),
        "timeline_s_ms": timeline,  # [seconds after the first publish, latency in ms] per event
    }


def update_capacity(user: str, seconds: float = 4.0) -> float:
    """How many /key/update a second the proxy answers to one client sending them back to back."""
    from worker import proxy
    from worker.db import session_scope
    from worker.models import Account

    with session_scope() as session:
        account = session.get(Account, user)
        key_hash, budget = account.key_hash, account.budget_pushed_usd
    done, stop = 0, time.perf_counter() + seconds
    while time.perf_counter() < stop:
        proxy.set_max_budget(key_hash, budget)
        done += 1
    return round(done / seconds, 1)


def delete_real_keys(alias_prefix: str) -> int:
    from worker.db import session_scope
    from worker.models import Account

    with session_scope() as session:
        hashes = [h for (h,) in session.query(Account.key_hash).filter(Account.key_status == "active")]
    with httpx.Client(base_url=REAL_URL, headers={"Authorization": f"Bearer {REAL_KEY}"}, timeout=60) as c:
        for i in range(0, len(hashes), 100):
            c.post("/key/delete", json={"keys": hashes[i:i + 100]}).raise_for_status()
    return len(hashes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument("--real-workers", type=int, default=REAL_WORKERS)
    parser.add_argument("--latency-only", action="store_true", help="skip the throughput runs")
    args = parser.parse_args()
    run = common.Run("event_path")
    procs = common.Procs()
    figures: dict[str, Any] = {}
    notes = []
    try:
        port = common.free_port()
        base_url = f"http://127.0.0.1:{port}"
        procs.standin(port)
        env = common.configure(base_url, common.STANDIN_KEY)
        common.reset_database()
        common.flush_redis()
        users = [f"acct-{i:05d}" for i in range(ACCOUNTS)]
        lat_n = int(args.rate * args.seconds) * 2  # one set of accounts per stand-in latency run
        lat_users = [f"lat-{i:05d}" for i in range(lat_n)]
        t = time.perf_counter()
        provision(users + lat_users)
        print(f"provisioned {len(users) + lat_n} accounts in {time.perf_counter() - t:.1f}s", flush=True)
        figures["throughput"] = []
        if not args.latency_only:
            figures["celery_floor"] = floor(procs, env, args.payments)
            print(figures["celery_floor"], flush=True)
            for n in (1, 2):
                r = throughput(procs, env, base_url, n, args.payments, users, f"spread{n}")
                figures["throughput"].append({"spread": "1,000 accounts", **r})
                print(r, flush=True)
            for n in (1, 2):
                r = throughput(procs, env, base_url, n, args.payments // 3, users[:HOT_ACCOUNTS], f"hot{n}")
                figures["throughput"].append({"spread": f"{HOT_ACCOUNTS} hot accounts", **r})
                print(r, flush=True)
            figures["drain"] = []
            for n in (1, 2):
                r = drain(procs, env, base_url, n, args.payments, users, f"drain{n}")
                figures["drain"].append(r)
                print(r, flush=True)
        half = len(lat_users) // 2
        figures["latency_standin"] = latency(procs, env, lat_users[:half], args.rate, "lat-standin")
        print({k: v for k, v in figures["latency_standin"].items() if k != "timeline_s_ms"}, flush=True)
        figures["latency_standin_2"] = latency(procs, env, lat_users[half:], args.rate, "lat-standin2", n_workers=2)
        print({k: v for k, v in figures["latency_standin_2"].items() if k != "timeline_s_ms"}, flush=True)
        if not args.no_real:
            figures["latency_real"] = real_latency(procs, lat_n // 2, args.rate, args.real_workers)
            print({k: v for k, v in figures["latency_real"].items() if k != "timeline_s_ms"}, flush=True)
    finally:
        procs.stop_all()
    table = []
    fl = figures.get("celery_floor")
    if fl:
        table.append(("Celery floor: no-op task, 1 process", f"{fl['tasks_per_s']} tasks/s",
                      f"{fl['tasks']} tasks in {fl['elapsed_s']} s, same app configuration (events on, acks late)"))
    for r in figures["throughput"]:
        table.append((f"throughput, {r['spread']}, {r['workers']} process(es)", f"{r['payments_per_s']} payments/s",
                      f"{r['payments']} payments in {r['elapsed_s']} s; task mean {r['task_mean_ms']} ms; "
                      f"{r['key_updates_per_payment']} push requests per payment"))
    for r in figures.get("drain", []):
        table.append((f"drain a backlog, 1,000 accounts, {r['workers']} process(es)",
                      f"{r['payments_per_s']} payments/s",
                      f"{r['payments']} payments queued before the workers consumed; {r['elapsed_s']} s from the "
                      f"order to consume to the last push; {r['push_requests_per_payment']} push requests per payment"))
    for name in ("latency_standin", "latency_standin_2", "latency_real"):
        r = figures.get(name)
        if r and "p50_ms" in r:
            where = "real proxy" if name == "latency_real" else "stand-in"
            table.append((f"latency, {where}, at {r['target_rate_per_s']:g}/s, {r['workers']} process(es)",
                          f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms",
                          f"{r['measured']} events, achieved {r['achieved_rate_per_s']}/s, p90 {r['p90_ms']} ms, "
                          f"max {r['max_ms']} ms, {r['over_100ms']} over 100 ms, task mean {r['task_mean_ms']} ms"
                          + (f"; the proxy answers {r['proxy_key_updates_per_s_one_client']} /key/update a second"
                             if "proxy_key_updates_per_s_one_client" in r else "")))
            low = r.get("at_low_rate")
            if low:
                table.append((f"latency, real proxy, at {low['target_rate_per_s']:g}/s, {low['workers']} process(es)",
                              f"p50 {low['p50_ms']} ms, p99 {low['p99_ms']} ms",
                              f"{low['measured']} events, p90 {low['p90_ms']} ms, max {low['max_ms']} ms, "
                              f"task mean {low['task_mean_ms']} ms"))
        elif r:
            table.append((name.replace("_", ", "), "skipped", r.get("reason", "")))
    one = next((r for r in figures["throughput"] if r["workers"] == 1 and r["accounts"] == ACCOUNTS), None)
    lat = figures["latency_standin"]
    figures["targets"] = {
        "payments_per_s_1_process>=300": one["payments_per_s"] >= 300 if one else None,
        "p99_ms_at_50_per_s<250 (1 process)": lat["p99_ms"] < 250,
        "p99_ms_at_50_per_s<250 (2 processes)": figures["latency_standin_2"]["p99_ms"] < 250,
    }
    notes.append(f"targets: {figures['targets']}")
    notes.append(f"latency runs start after {WARM_UP} untimed warm-up payments per worker start; each timed payment is "
                 "the only one of its account; latency = accounts.budget_pushed_at (set once the proxy answered "
                 "/key/update) minus the publish time; per-event timeline in the JSON")
    notes.append("task mean: the run time Celery logs per message; payments run in batches (worker.delivery), and "
                 "each message of a batch logs the batch's time")
    notes.append("workers: `celery -A worker.app worker -Q payments -c 1 -l INFO`, one per process; stand-in proxy "
                 "(tests/standin/proxy.py) in its own process; producer, workers, PostgreSQL and Redis share the cores")
    run.write(figures, table, ("measure", "result", "detail"), notes)


def real_latency(procs: common.Procs, n: int, rate: float, n_workers: int) -> dict[str, Any]:
    try:
        httpx.get(f"{REAL_URL}/health/liveliness", timeout=3)
    except httpx.HTTPError as exc:
        return {"skipped": True, "reason": f"real proxy not reachable at {REAL_URL}: {exc}"}
    prefix = f"bench-{uuid.uuid4().hex[:6]}-"
    env = common.configure(REAL_URL, REAL_KEY, alias_prefix=prefix)
    common.reset_database()
    common.flush_redis()
    users = [f"real-{i:05d}" for i in range(n + int(REAL_LOW_RATE * REAL_LOW_SECONDS))]
    try:
        t = time.perf_counter()
        provision(users, threads=4)
        print(f"provisioned {n} keys on the real proxy in {time.perf_counter() - t:.1f}s", flush=True)
        capacity = update_capacity(users[0])
        print(f"real proxy: {capacity} /key/update per second, one client", flush=True)
        at_rate = latency(procs, env, users[:n], rate, "lat-real", n_workers=n_workers)
        print({k: v for k, v in at_rate.items() if k != "timeline_s_ms"}, flush=True)
        low = latency(procs, env, users[n:], REAL_LOW_RATE, "lat-real-low", n_workers=n_workers)
        return {**at_rate, "proxy_key_updates_per_s_one_client": capacity, "at_low_rate": low}
    finally:
        deleted = delete_real_keys(prefix)
        print(f"deleted {deleted} bench keys from the real proxy", flush=True)


if __name__ == "__main__":
    main()
