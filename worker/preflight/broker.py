"""Redis, the broker: reachable, and set up so that queued events survive a restart and are
never evicted."""

from __future__ import annotations

import redis

from worker.preflight.findings import Finding, fail, first_line, ok, safe_url, warn


def broker(redis_url: str) -> Finding:
    where = safe_url(redis_url)
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        return fail("redis", f"cannot reach {where} ({first_line(exc)}); check REDIS_URL and that Redis is running")
    try:
        config = {**client.config_get("appendonly"), **client.config_get("maxmemory-policy")}
    except redis.RedisError as exc:  # a managed Redis may refuse CONFIG
        return warn("redis", f"{where} reachable, but its settings cannot be read ({first_line(exc)}); make sure "
                             "it runs with appendonly yes and maxmemory-policy noeviction")
    finally:
        client.close()
    problems = []
    if config.get("appendonly") != "yes":
        problems.append("appendonly is off (a Redis restart loses every queued event): set appendonly yes")
    policy = config.get("maxmemory-policy")
    if policy != "noeviction":
        problems.append(f"maxmemory-policy is {policy} (a full Redis may evict queued events): "
                        "set maxmemory-policy noeviction")
    if problems:
        return warn("redis", f"{where} reachable, but " + "; ".join(problems))
    return ok("redis", f"{where} reachable, appendonly yes, maxmemory-policy noeviction")
