"""What reading spend-log pages costs the proxy's users, by page size and by the share of time read.

    uv run python -m bench.proxy_pages [--turn-s 90] [--grid 25:0.3,10:0.2,10:0.1,5:0.2,5:0.1]

The measure behind SPEND_PAGE_SIZE and worker/spend/pace.py's REST. Needs a real proxy of its own,
started as for bench.proxy_load (its spend-log table is emptied first). 20,000 rows in the real
row shape are COPYed into it; users' /chat/completions run at `--rate` a second, open loop, taking
turns: no reader (the bare figure, before the first and after every reader turn), then one reader
paging /spend/logs/v2 at each `size:duty` of the grid. The reader rests (1 / duty - 1) times each
request's duration, as a pace slot does. Per turn: users' p50 and p99, the page's time, rows read
a second, and the proxy's CPU seconds a second (its process tree: uvicorn and the query engine).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

# The proxy of its own, before bench.spend_real reads where to write (its default is the shared one).
os.environ.setdefault("REAL_LITELLM_DB", "postgresql://litellm:litellm@127.0.0.1:5432/litellm_quiet")

import httpx  # noqa: E402
import psycopg  # noqa: E402

from bench import common, real_keys, spend_real  # noqa: E402
from bench.proxy_load import KEY, PROXY_DB, URL, Users, proxy_cpu_s  # noqa: E402
from bench.spend_rows import History  # noqa: E402

ROWS = 20_000
HOUR = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # the rows' range: nothing else is logged there


def reader(size: int, duty: float, stop: threading.Event, took: list[float], rows: list[int],
           failed: list[BaseException]) -> None:
    """Pages through one 5-minute window of the rows again and again, resting between requests."""
    start, end = HOUR.strftime("%Y-%m-%d %H:%M:%S"), (HOUR + timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    try:
        with httpx.Client(base_url=URL, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
            page = 1
            while not stop.is_set():
                began = time.perf_counter()
                r = client.get("/spend/logs/v2", params={"start_date": start, "end_date": end, "page": page,
                                                          "page_size": size})
                r.raise_for_status()
                took.append(time.perf_counter() - began)
                rows.append(len(r.json()["data"]))
                page = page + 1 if rows[-1] == size else 1
                stop.wait(took[-1] * (1 / duty - 1))
    except BaseException as exc:  # noqa: BLE001 - re-raised by the turn, which must not report a reader that died
        failed.append(exc)


def turn(users: Users, name: str, seconds: float, size: int = 0, duty: float = 0.0) -> dict[str, Any]:
    stop, took, rows, failed = threading.Event(), [], [], []
    thread = threading.Thread(target=reader, args=(size, duty, stop, took, rows, failed)) if size else None
    cpu, began = proxy_cpu_s(), time.monotonic()
    if thread:
        thread.start()
    users.run(name, seconds)
    stop.set()
    if thread:
        thread.join()
    if failed:
        raise failed[0]
    elapsed = time.monotonic() - began
    return {"pages": len(took), "page_ms": round(1000 * sum(took) / len(took), 1) if took else None,
            "seconds": round(elapsed, 1), "rows_per_s": round(sum(rows) / elapsed, 1),
            "proxy_cpu_per_s": round((proxy_cpu_s() - cpu) / elapsed, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turn-s", type=float, default=90)
    parser.add_argument("--rate", type=float, default=10, help="user calls a second")
    parser.add_argument("--grid", default="25:0.3,10:0.2,10:0.1,5:0.2,5:0.1", help="size:duty, comma separated")
    args = parser.parse_args()
    grid = [(int(s), float(d)) for s, d in (item.split(":") for item in args.grid.split(","))]
    if any(size < 1 or not 0 < duty <= 1 for size, duty in grid):
        raise SystemExit("--grid: each size at least 1, each duty in (0, 1]")
    if spend_real.REAL_DB != PROXY_DB or PROXY_DB.rstrip("/").endswith("/litellm_real") or URL.endswith(":4000"):
        raise SystemExit("bench.proxy_pages empties its proxy's spend logs: give it a proxy of its own")
    run = common.Run("proxy_pages")
    prefix = real_keys.run_prefix("pp")
    figures: dict[str, Any] = {"rows": ROWS, "turns": {}}
    try:
        with psycopg.connect(PROXY_DB) as conn:
            conn.execute('DELETE FROM "LiteLLM_SpendLogs"')
        history = History(ROWS, int(HOUR.timestamp() * 1000), int(3600_000 / ROWS), 1000)
        spend_real.insert_rows(history, "pp")
        with httpx.Client(base_url=URL, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
            user_key = c.post("/key/generate", json={"key_alias": f"{prefix}user-traffic",
                                                     "max_budget": 1e6}).json()["key"]
        users = Users(user_key, args.rate)
        users.run("warm-up", 10)
        bare_cpu = [turn(users, "bare", args.turn_s)["proxy_cpu_per_s"]]
        for size, duty in grid:
            name = f"{size} rows, {duty:.0%} of the time"
            figures["turns"][name] = {"size": size, "duty": duty, **turn(users, name, args.turn_s, size, duty)}
            bare_cpu.append(turn(users, "bare", args.turn_s)["proxy_cpu_per_s"])
    finally:
        figures["deleted_keys"] = real_keys.sql_delete_prefix(PROXY_DB, prefix)
        figures["deleted_rows"] = spend_real.delete_rows()
    lat = {state: v for state, v in users.latencies.items() if state != "warm-up"}
    bare = common.percentile(lat["bare"], 99)
    figures["bare_p99_ms"], figures["bare_proxy_cpu_per_s"] = bare, round(sum(bare_cpu) / len(bare_cpu), 3)
    figures["user_errors"] = dict(users.errors)
    table = [("no reader (bare)", len(lat["bare"]), common.percentile(lat["bare"], 50), bare, "1.00", "", "",
              figures["bare_proxy_cpu_per_s"], "")]
    for name, t in figures["turns"].items():
        p99 = common.percentile(lat[name], 99)
        # The proxy's CPU for one page: what the turn used beyond the bare turns, per page read.
        per_page = (t["proxy_cpu_per_s"] - figures["bare_proxy_cpu_per_s"]) * t["seconds"] / max(1, t["pages"])
        t.update(calls=len(lat[name]), p50_ms=common.percentile(lat[name], 50), p99_ms=p99,
                 proxy_cpu_ms_per_page=round(1000 * per_page, 1))
        table.append((name, len(lat[name]), round(t["p50_ms"], 1), round(p99, 1), f"{p99 / bare:.2f}",
                      t["page_ms"], t["rows_per_s"], t["proxy_cpu_per_s"], t["proxy_cpu_ms_per_page"]))
    run.write(figures, table, ("reader", "user calls", "p50 ms", "p99 ms", "p99 x bare", "page ms", "rows/s",
                               "proxy CPU s/s", "proxy CPU ms a page"), [
        f"users: {args.rate} calls/s of a mock model; turns of {args.turn_s} s, a bare turn before the first "
        "reader turn and after each; the bare row pools them",
        f"failed user calls (left out of the percentiles), by turn: {figures['user_errors'] or 'none'}",
        "the proxy (litellm 1.106.2, 1 uvicorn worker, its own database) shares the 2 cores with PostgreSQL "
        "and this process; no worker runs",
    ])


if __name__ == "__main__":
    main()
