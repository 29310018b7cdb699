"""Verified webhooks per second through `litellm-credits serve`, against a bare endpoint of the same
framework (FastAPI on uvicorn, same logging) in the same run, and latency at a steady 100 requests/s.

Each request is a Paystack charge.success (the published example's shape, a unique reference per
request) signed as Paystack signs (hex HMAC-SHA512 of the body): serve verifies it, maps it, signs
the event and answers 200 once the message is on the bench Redis db's `payments` list. The bare
endpoint reads the body and answers 200. The load comes from this process (httpx, keep-alive
connections), sharing the cores with the server measured; PostgreSQL and Redis run on the same machine.

    uv run python -m bench.webhooks [--requests 4000] [--concurrency 32] [--rate 100] [--seconds 20]

Run it with BENCH_REDIS_DB (and BENCH_DB_NAME) of its own when other benches may run at the same
time: the queued-message count it checks is of that Redis db.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import secrets
import sys
import time
from typing import Any

import httpx
import redis
from fastapi import FastAPI, Request

from bench import common

PAYSTACK_SECRET = "sk_test_" + secrets.token_hex(20)
SIGNING_SECRET = secrets.token_hex(32)
GOALS = {"ratio_to_bare": 0.5, "p99_ms_at_100_per_s": 50.0}

bare_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@bare_app.post("/webhooks/paystack")
async def bare(request: Request) -> dict[str, str]:
    await request.body()
    return {"status": "ok"}


def serve_bare(port: int) -> None:
    """The bare endpoint, run exactly as serve runs its app (our logging, uvicorn's defaults)."""
    import uvicorn

    from worker.logs import configure

    configure()
    uvicorn.run(bare_app, host="127.0.0.1", port=port, log_config=None, server_header=False)


def charge(n: int, run: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"event": "charge.success", "data": {
        "id": 302961 + n, "domain": "live", "status": "success", "reference": f"bench-{run}-{n}", "amount": 500,
        "gateway_response": "Approved", "paid_at": "2026-11-20T10:42:20.000Z", "created_at": "2026-11-20T10:42:03.000Z",
        "channel": "card", "currency": "USD", "metadata": {"user_id": f"user-{n % 1000}"}, "fees": 15,
        "customer": {"id": 68324, "email": f"user-{n % 1000}@example.com", "customer_code": "CUS_qo38as2hpsgk2r0"},
        "authorization": {"authorization_code": "AUTH_f5rnfq9p", "bin": "539999", "last4": "8877",
                          "card_type": "mastercard DEBIT", "bank": "Guaranty Trust Bank", "country_code": "NG"},
        "plan": {}}}).encode()
    signature = hmac.new(PAYSTACK_SECRET.encode(), body, hashlib.sha512).hexdigest()
    return body, {"content-type": "application/json", "x-paystack-signature": signature}


async def closed_loop(url: str, total: int, concurrency: int, run: str) -> dict[str, Any]:
    """As fast as `concurrency` keep-alive connections go: requests per second, all answered 200."""
    requests = [charge(n, run) for n in range(total)]
    statuses: list[int] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        await asyncio.gather(*(client.post("/webhooks/paystack", content=b, headers=h)
                               for b, h in requests[:concurrency]))  # connections open, warm
        queue = iter(requests)

        async def lane() -> None:
            for body, headers in queue:
                statuses.append((await client.post("/webhooks/paystack", content=body, headers=headers)).status_code)

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests": total, "concurrency": concurrency, "elapsed_s": round(elapsed, 3),
            "per_s": round(total / elapsed, 1), "non_200": sum(s != 200 for s in statuses)}


async def open_loop(url: str, rate: float, seconds: float, run: str) -> dict[str, Any]:
    """Requests sent on a fixed schedule whatever the answers; latency from the scheduled time
    (a late send counts against the server, so no stall is hidden)."""
    total = int(rate * seconds)
    requests = [charge(n, run) for n in range(total)]
    latencies: list[float] = []
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=200), timeout=30) as client:
        for body, headers in requests[:50]:  # warm-up, untimed
            await client.post("/webhooks/paystack", content=body, headers=headers)
        start = time.perf_counter() + 0.1

        async def one(n: int) -> None:
            due = start + n / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            body, headers = requests[n]
            answer = await client.post("/webhooks/paystack", content=body, headers=headers)
            latencies.append((time.perf_counter() - due) * 1000)
            statuses.append(answer.status_code)

        await asyncio.gather(*(one(n) for n in range(50, total)))
        achieved = (total - 50) / (time.perf_counter() - start - 50 / rate)
    return {"rate_per_s": rate, "requests": total - 50, "achieved_per_s": round(achieved, 1),
            "p50_ms": round(common.percentile(latencies, 50), 2), "p90_ms": round(common.percentile(latencies, 90), 2),
            "p99_ms": round(common.percentile(latencies, 99), 2), "max_ms": round(max(latencies), 2),
            "non_200": sum(s != 200 for s in statuses)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="bare and serve take turns this many times")
    args = parser.parse_args()
    run = common.Run("webhooks")
    procs = common.Procs()
    env = common.configure("http://127.0.0.1:9", "unused")
    common.reset_database()
    common.flush_redis()
    door_env = {k: v for k, v in env.items() if k not in ("LITELLM_MASTER_KEY", "KEY_ENCRYPTION_KEY")}
    door_env.update({"EVENT_SIGNING_SECRET": SIGNING_SECRET, "PAYSTACK_SECRET_KEY": PAYSTACK_SECRET,
                     "LOG_LEVEL": "INFO"})  # the level a deployment runs at: one access line a request
    queue = redis.Redis.from_url(env["REDIS_URL"])
    figures: dict[str, Any] = {"closed_loop": {"bare": [], "serve": []}}
    try:
        ports = {"bare": common.free_port(), "serve": common.free_port()}
        procs.start("bare", [sys.executable, "-m", "bench.webhooks", "--serve-bare", str(ports["bare"])], door_env)
        procs.start("serve", [sys.executable, "-m", "worker.cli.main", "serve", "--port", str(ports["serve"])],
                    door_env)
        for name, port in ports.items():
            common.wait_http(f"http://127.0.0.1:{port}/metrics" if name == "serve" else f"http://127.0.0.1:{port}/")
        for r in range(args.rounds):
            for name, port in ports.items():
                result = asyncio.run(closed_loop(f"http://127.0.0.1:{port}", args.requests, args.concurrency,
                                                 f"{name}{r}"))
                figures["closed_loop"][name].append(result)
                print(name, result, flush=True)
        figures["queued_messages"] = queue.llen("payments")
        queue.delete("payments")
        for name, port in ports.items():
            figures[f"latency_{name}"] = asyncio.run(open_loop(f"http://127.0.0.1:{port}", args.rate, args.seconds,
                                                               f"lat-{name}"))
            print(name, figures[f"latency_{name}"], flush=True)
        queue.delete("payments")
    finally:
        procs.stop_all()
    best = {name: max(r["per_s"] for r in rs) for name, rs in figures["closed_loop"].items()}
    figures["ratio_to_bare"] = round(best["serve"] / best["bare"], 3)
    lat = figures["latency_serve"]
    figures["goals"] = {f"ratio_to_bare>={GOALS['ratio_to_bare']}": figures["ratio_to_bare"] >= GOALS["ratio_to_bare"],
                        f"p99_ms_at_{args.rate:g}_per_s<{GOALS['p99_ms_at_100_per_s']:g}":
                            lat["p99_ms"] < GOALS["p99_ms_at_100_per_s"]}
    table = []
    for name in ("bare", "serve"):
        rs = figures["closed_loop"][name]
        table.append((f"{name}: closed loop, {args.concurrency} connections", f"{best[name]} requests/s",
                      "rounds: " + ", ".join(f"{r['per_s']}/s ({r['requests']} in {r['elapsed_s']} s, "
                                             f"{r['non_200']} not 200)" for r in rs)))
    table.append(("serve / bare", figures["ratio_to_bare"], f"goal >= {GOALS['ratio_to_bare']}"))
    for name in ("bare", "serve"):
        r = figures[f"latency_{name}"]
        table.append((f"{name}: latency at a steady {args.rate:g}/s", f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms",
                      f"{r['requests']} requests, achieved {r['achieved_per_s']}/s, p90 {r['p90_ms']} ms, "
                      f"max {r['max_ms']} ms, {r['non_200']} not 200"))
    notes = [f"goals: {figures['goals']}",
             f"messages on the payments list after the closed-loop runs: {figures['queued_messages']} "
             f"(serve's 200s: {sum(r['requests'] - r['non_200'] for r in figures['closed_loop']['serve'])} "
             f"plus {args.concurrency * args.rounds} warm-up requests)",
             "serve: `litellm-credits serve` (one uvicorn process, LOG_LEVEL=INFO, EVENT_SIGNING_SECRET set); each "
             "200 means verified (HMAC-SHA512), mapped, validated, signed (HMAC-SHA256) and LPUSHed to Redis",
             "bare: the same framework and server settings, an endpoint that reads the body and answers 200",
             "load from this process (httpx); the generator, the server, Redis and PostgreSQL share the cores, so "
             "the absolute rates are bounded by the generator and the machine's other work; the ratio compares "
             "the two servers under the same generator (best round of each)",
             f"Redis db {common.BENCH_REDIS_DB}, database {common.BENCH_DB}"]
    run.write(figures, table, ("measure", "result", "detail"), notes)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]))
    else:
        main()
