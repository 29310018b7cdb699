"""Steady state against the real LiteLLM proxy: the highest rate the spend sync keeps up with, as a
share of the proxy's own page rate, and rows fetched per row stored.

    uv run python -m bench.spend_steady [--interval 10] [--settle 15] [--duration 100] [--fractions 0.6,0.8,1.0,1.2,1.5]

Needs ../shared/litellm-real on REAL_LITELLM_URL (default http://127.0.0.1:4000, master key
REAL_LITELLM_KEY) and its database REAL_LITELLM_DB. Every row this bench writes into the proxy's
"LiteLLM_SpendLogs" has a request id starting `bench12-steady-` and is deleted afterwards.

1. The proxy's page rate: 10,000 rows in the real row shape (about 9.9 KB of JSON each) put into a
   past hour, then read back through /spend/logs/v2 in pages of 1,000, one after the other (rows/s).
   Measured before the trials and again after them.
2. Trials, one per rate (a fraction of that page rate): a feeder thread writes rows into the
   proxy's table as its batch writer would (full shape, startTime = now, every half second); one
   real worker (`celery -A worker.app worker -Q spend -c 1`) reads the windows; this process plays
   beat, calling `worker.spend.sync.dispatch()` every SPEND_SYNC_INTERVAL_S. The lag (now minus the
   sync's cursor) is sampled after each dispatch. The lag does not grow when its slope over the
   trial after its warm-up (30 s, or settle + 2 intervals if longer) is under 0.1 s per s (a sync
   at 90% of the feed's pace) and its last sample is under settle + 3 intervals. Rows fetched per
   row stored is sum(rows_seen) / sum(inserted) of spend_sync_runs.

Every trial starts on a freshly migrated bench database with 10,000 accounts (one row in ten on a
key not ours, one in fifty a failed call), the cursor starting at the trial's start. Settings are
the defaults except SPEND_SYNC_INTERVAL_S and SPEND_SETTLE_S (`--interval`, `--settle`), shortened
so that a trial takes minutes; the results say which were used.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from bench import common, litellm_table
from bench.spend_rows import History

REAL_URL = os.environ.get("REAL_LITELLM_URL", "http://127.0.0.1:4000")
REAL_KEY = os.environ.get("REAL_LITELLM_KEY", "sk-master-1234")
REAL_DB = os.environ.get("REAL_LITELLM_DB", "postgresql://litellm:litellm@127.0.0.1:5432/litellm_real")
PREFIX = "bench12-steady-"
ACCOUNTS = 10_000
FEED = History(10**9, 0, 400, ACCOUNTS)  # rows by index only; startTime is set when fed
TICK_S = 0.5
# The lag is a saw tooth between the settle time and settle + interval + a read; a sync that keeps
# only 90% of the feed's pace grows it by 0.1 s a second, which a trial of minutes tells from the tooth.
WARM_UP_S = 30  # at least; see warm_up()
MAX_SLOPE = 0.1


def page_rate(rows: int = 10_000) -> dict[str, Any]:
    """Serial pages of 1,000 of `rows` full-shape rows from the real proxy, in rows/s."""
    from worker import proxy
    from worker.spend.windows import as_query

    t0 = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=uuid.uuid4().int % (300 * 24))
    prefix = f"{PREFIX}rate-{uuid.uuid4().hex[:6]}-"
    history = History(rows, int(t0.timestamp() * 1000), 100, ACCOUNTS)
    litellm_table.load(REAL_DB, history, prefix, full=True)
    try:
        start, end = as_query(t0), as_query(t0 + timedelta(milliseconds=rows * 100 + 1000))
        times, got = [], 0
        for number in range(1, -(-rows // 1000) + 1):
            t = time.perf_counter()
            got += len(proxy.spend_logs(start, end, number, 1000).data)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        proxy.spend_logs(start, end, 1, 1)
        count_ms = (time.perf_counter() - t) * 1000
    finally:
        litellm_table.delete(REAL_DB, prefix)
    return {"rows": got, "rows_per_s": round(got / sum(times)), "page_ms_median": round(
        1000 * common.percentile(times, 50), 1), "count_request_ms": round(count_ms, 1),
        "load_average": round(os.getloadavg()[0], 2)}


class Feeder(threading.Thread):
    """Writes `rate` rows a second into the proxy's table, startTime = now, every TICK_S."""

    def __init__(self, rate: float, prefix: str):
        super().__init__(daemon=True)
        self.rate, self.prefix, self.fed, self.late_s = rate, prefix, 0, 0.0
        self.done = threading.Event()

    def run(self) -> None:
        began = time.monotonic()
        with psycopg.connect(REAL_DB) as conn:
            while not self.done.wait(max(0.0, TICK_S - (time.monotonic() - began) % TICK_S)):
                due = int(self.rate * (time.monotonic() - began)) - self.fed
                if due <= 0:
                    continue
                now_ms = int(time.time() * 1000)
                step = TICK_S * 1000 / due
                t = time.monotonic()
                self.fed += litellm_table.copy_rows(conn, (
                    litellm_table.row_values(FEED, i, f"{self.prefix}{i:09d}", True,
                                             now_ms - int((due - k) * step))
                    for k, i in enumerate(range(self.fed, self.fed + due))))
                self.late_s = max(self.late_s, time.monotonic() - t - TICK_S)  # the feeder fell behind


def trial(procs: common.Procs, rate: float, duration: float, interval: int, settle: int) -> dict[str, Any]:
    from sqlalchemy import text

    from bench.spend_ingest import prepare_database
    from worker.db import dispose_engine, session_scope
    from worker.spend import runs
    from worker.spend.sync import dispatch

    start = datetime.now(UTC).replace(microsecond=0)
    env = common.configure(REAL_URL, REAL_KEY, SPEND_SYNC_INTERVAL_S=str(interval), SPEND_SETTLE_S=str(settle),
                           SPEND_SYNC_START=start.isoformat(), PROXY_TIMEOUT_S="30")
    prepare_database(History(1, 0, 400, ACCOUNTS))
    common.flush_redis()
    worker = procs.worker(f"steady-{int(rate)}", env, queues="spend")
    prefix = f"{PREFIX}{uuid.uuid4().hex[:6]}-"
    feeder = Feeder(rate, prefix)
    load_start = round(os.getloadavg()[0], 2)
    began = time.monotonic()
    feeder.start()
    samples: list[tuple[float, float]] = []
    try:
        while time.monotonic() - began < duration:
            time.sleep(max(0.0, interval - (time.monotonic() - began) % interval))  # beat's cadence
            dispatch()
            with session_scope() as session:
                cursor = runs.cursor(session)
            if cursor is not None:
                samples.append((round(time.monotonic() - began, 1),
                                round((datetime.now(UTC) - cursor.position).total_seconds(), 1)))
    finally:
        feeder.done.set()
        feeder.join()
        procs.stop(worker)
        with session_scope() as session:
            seen, inserted = session.execute(text(
                "SELECT coalesce(sum(rows_seen), 0), coalesce(sum(inserted), 0) FROM spend_sync_runs")).one()
            stored = session.execute(text("SELECT count(*) FROM spend_logs")).scalar_one()
            windows = session.execute(text("SELECT count(*), sum(reads) FROM spend_windows")).one()
        dispose_engine()
        litellm_table.delete(REAL_DB, prefix)
    warm = [s for s in samples if s[0] >= warm_up(interval, settle)]
    slope = _slope(warm)
    keeps_up = slope < MAX_SLOPE and bool(samples) and samples[-1][1] < settle + 3 * interval
    return {"rate": round(rate), "duration_s": duration, "fed": feeder.fed, "stored": stored,
            "feeder_fell_behind_s": round(feeder.late_s, 2), "rows_seen": int(seen), "inserted": int(inserted),
            "fetched_per_stored": round(int(seen) / int(inserted), 3) if inserted else None,
            "windows": windows[0], "window_reads": windows[1], "lag_samples": samples,
            "lag_slope_s_per_s": round(slope, 3), "keeps_up": keeps_up, "load_average_at_start": load_start,
            "load_average_at_end": round(os.getloadavg()[0], 2)}


def warm_up(interval: int, settle: int) -> float:
    """Until the first rows can be read (settle) and the next two beats have read them, the lag
    rises however fast the sync is: with the default 60 s and 120 s that ramp is 240 s, and a slope
    fitted over it said "falls behind" of a sync that keeps up."""
    return max(WARM_UP_S, settle + 2 * interval)


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return float("inf")
    n = len(points)
    mx, my = sum(p[0] for p in points) / n, sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var if var else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=int, default=10, help="SPEND_SYNC_INTERVAL_S (default setting: 60)")
    parser.add_argument("--settle", type=int, default=15, help="SPEND_SETTLE_S (default setting: 120)")
    parser.add_argument("--duration", type=float, default=100)
    parser.add_argument("--fractions", default="0.6,0.8,1.0,1.2,1.5")
    args = parser.parse_args()
    run = common.Run("spend_steady")
    httpx.get(f"{REAL_URL}/health/liveliness", timeout=5).raise_for_status()
    common.configure(REAL_URL, REAL_KEY, PROXY_TIMEOUT_S="30")
    litellm_table.delete(REAL_DB, PREFIX)  # what an interrupted run left
    before = page_rate()
    print(f"proxy page rate: {before}", flush=True)
    procs = common.Procs()
    trials = []
    try:
        for fraction in map(float, args.fractions.split(",")):
            t = trial(procs, fraction * before["rows_per_s"], args.duration, args.interval, args.settle)
            t["fraction_of_page_rate"] = fraction
            trials.append(t)
            print({k: v for k, v in t.items() if k != "lag_samples"}, flush=True)
            if not t["keeps_up"]:
                break
    finally:
        procs.stop_all()
        common.configure(REAL_URL, REAL_KEY, PROXY_TIMEOUT_S="30")
        litellm_table.delete(REAL_DB, PREFIX)
    after = page_rate()
    report(run, args, before, after, trials)


def report(run: common.Run, args: argparse.Namespace, before: dict[str, Any], after: dict[str, Any],
           trials: list[dict[str, Any]]) -> None:
    kept = [t for t in trials if t["keeps_up"]]
    best = max(kept, key=lambda t: t["rate"]) if kept else None
    page = (before["rows_per_s"] + after["rows_per_s"]) / 2
    summary = {
        "proxy_page_rate_rows_per_s": {"before": before["rows_per_s"], "after": after["rows_per_s"], "mean": page},
        "highest_rate_kept_up": best["rate"] if best else None,
        "share_of_page_rate": round(best["rate"] / page, 3) if best else None,
        "fetched_per_stored_at_that_rate": best["fetched_per_stored"] if best else None,
        "settings": {"SPEND_SYNC_INTERVAL_S": args.interval, "SPEND_SETTLE_S": args.settle,
                     "SPEND_WINDOW_S": 300, "SPEND_PAGE_SIZE": 1000, "SPEND_VERIFY_S": 86400},
    }
    summary["targets"] = {"share_of_page_rate>=0.8": (summary["share_of_page_rate"] or 0) >= 0.8,
                          "fetched_per_stored<=1.1": (summary["fetched_per_stored_at_that_rate"] or 9) <= 1.1}
    table = [("proxy page rate (serial pages of 1,000)", f"{before['rows_per_s']} / {after['rows_per_s']} rows/s",
              f"before / after the trials; median page {before['page_ms_median']} / {after['page_ms_median']} ms, "
              f"a count request {before['count_request_ms']} / {after['count_request_ms']} ms")]
    for t in trials:
        lags = [s[1] for s in t["lag_samples"]]
        table.append((f"feed {t['rate']} rows/s ({t['fraction_of_page_rate']:.2f} of the page rate)",
                      "keeps up" if t["keeps_up"] else "falls behind",
                      f"lag {min(lags, default=0)}-{max(lags, default=0)} s, last {lags[-1] if lags else None} s, "
                      f"slope {t['lag_slope_s_per_s']} s/s; {t['fed']:,} fed, {t['stored']:,} stored; "
                      f"fetched/stored {t['fetched_per_stored']}; load {t['load_average_at_start']}"))
    table.append(("highest rate kept up / page rate", f"{summary['share_of_page_rate']}", "target >= 0.8"))
    table.append(("rows fetched per row stored at that rate", f"{summary['fetched_per_stored_at_that_rate']}",
                  "target <= 1.1"))
    run.write({"summary": summary, "page_rate_before": before, "page_rate_after": after, "trials": trials}, table,
              ("measure", "result", "detail"), [
                  f"targets: {summary['targets']}",
                  f"settings: {summary['settings']}" + (
                      "" if (args.interval, args.settle) == (60, 120)
                      else " (interval and settle shortened from the defaults 60 and 120)"),
                  f"each trial {args.duration:g} s; the real proxy (litellm 1.106.2, 1 worker), its PostgreSQL, "
                  "the feeder, one spend worker and this process share the 2 cores"])


if __name__ == "__main__":
    main()
