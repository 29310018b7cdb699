"""Reconcile on an idle proxy with many keys: how many keys a pass reads, and a hand edit repaired.

    uv run python -m bench.reconcile_idle [--keys 100000]

Needs a real proxy of its own, started as for bench.proxy_load. `--keys` keys of ours are written
into its key table (bench.real_keys) with their accounts; a full pass through the proxy's database
(LITELLM_DATABASE_URL) saves the watermark, as a worker's first pass would; a minute later a pass
reads the import's keys once more and settles it (key_changes.SLACK). Then, with nothing
changed, one incremental pass through the API and one through the database: keys the proxy handed
over (in /key/list answers, or rows of the query) and keys compared. Then one key's max_budget is
changed by hand through /key/update, and an incremental pass through the API finds and restores it.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("BENCH_DB_NAME", "credits_bench_quiet")
os.environ.setdefault("REAL_LITELLM_DB", "postgresql://litellm:litellm@127.0.0.1:5432/litellm_quiet")

import httpx  # noqa: E402

from bench import common, real_keys  # noqa: E402
from bench.proxy_load import KEY, PROXY_DB, URL  # noqa: E402
from bench.reconcile import populate  # noqa: E402


def use_source(direct: bool) -> None:
    from worker import proxy_db
    from worker.settings import get_settings

    if direct:
        os.environ["LITELLM_DATABASE_URL"] = PROXY_DB
    else:
        os.environ.pop("LITELLM_DATABASE_URL", None)
    get_settings.cache_clear()
    proxy_db.reset()


def one_pass(direct: bool) -> dict[str, Any]:
    """An incremental pass (fix=True); keys the proxy handed over, keys compared, requests."""
    from worker import proxy_db
    from worker.credits import key_sources
    from worker.credits.reconcile import reconcile

    handed = {"keys": 0, "requests": 0}
    fetch, execute = key_sources._fetch, proxy_db.execute

    def counting_fetch(*args, **kwargs):
        answer = fetch(*args, **kwargs)
        handed["keys"] += len(answer.keys)
        handed["requests"] += 1
        return answer

    def counting_execute(query, params=()):
        rows = execute(query, params)
        handed["keys"] += len(rows)
        handed["requests"] += 1
        return rows

    use_source(direct)
    key_sources._fetch, proxy_db.execute = counting_fetch, counting_execute
    try:
        began = time.perf_counter()
        report = reconcile(fix=True, full=False)
        seconds = time.perf_counter() - began
    finally:
        key_sources._fetch, proxy_db.execute = fetch, execute
    return {"source": "proxy database" if direct else "/key/list", "keys_handed_over": handed["keys"],
            "requests_or_queries": handed["requests"], "keys_compared": report.checked,
            "drifted": len(report.drifted), "fixed": report.fixed, "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    run = common.Run("reconcile_idle")
    prefix = real_keys.run_prefix("ri")
    common.configure(URL, KEY, alias_prefix=prefix, PROXY_TIMEOUT_S="60", CREDITS_ENV_FILE="")
    common.reset_database()
    from worker.credits import key_changes
    from worker.credits.reconcile import reconcile

    figures: dict[str, Any] = {"keys": args.keys, "passes": []}
    try:
        hashes = populate(URL, KEY, args.keys, PROXY_DB)
        use_source(direct=True)
        began = time.perf_counter()
        first = reconcile(fix=True, full=True)  # the watermark, as a worker's first pass leaves it
        figures["full_pass"] = {"source": "proxy database", "keys_compared": first.checked,
                                "seconds": round(time.perf_counter() - began, 1)}
        # Writes may commit out of updated_at order for a minute (key_changes.SLACK): the keys of
        # the import are read once more by the first pass a minute after it, which settles it.
        time.sleep(key_changes.SLACK.total_seconds() + 1)
        figures["passes"].append({"state": "a minute after the import", **one_pass(direct=True)})
        figures["passes"].append({"state": "idle", **one_pass(direct=False)})
        figures["passes"].append({"state": "idle", **one_pass(direct=True)})
        edited = sorted(hashes)[len(hashes) // 2]
        with httpx.Client(base_url=URL, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
            c.post("/key/update", json={"key": hashes[edited], "max_budget": 3.5}).raise_for_status()
        figures["passes"].append({"state": "one key edited by hand", **one_pass(direct=False)})
        with httpx.Client(base_url=URL, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
            info = c.get("/key/info", params={"key": hashes[edited]}).json()["info"]
        figures["edited_key_max_budget_after"] = info["max_budget"]
    finally:
        figures["deleted_keys"] = real_keys.sql_delete_prefix(PROXY_DB, prefix)
    table = [(p["state"], p["source"], f"{p['keys_handed_over']:,}", p["requests_or_queries"], p["keys_compared"],
              f"{p['keys_handed_over'] / args.keys:.3%}", p["fixed"], p["seconds"]) for p in figures["passes"]]
    run.write(figures, table, ("proxy", "keys from", "keys handed over", "requests or queries", "keys compared",
                               "share of all keys", "fixed", "seconds"), [
        f"{args.keys:,} keys of ours on the real proxy (litellm 1.106.2, 1 uvicorn worker); the watermark from "
        f"a full pass through the proxy's database ({figures['full_pass']['keys_compared']:,} keys compared in "
        f"{figures['full_pass']['seconds']} s)",
        f"the key edited by hand (max_budget 3.5 through /key/update) holds max_budget "
        f"{figures['edited_key_max_budget_after']} after the pass (the ledger's 12)",
    ])


if __name__ == "__main__":
    main()
