"""Spend ingestion: rows per second into the ledger, peak RSS, the no-news run, the bare limits,
and the seeds' two approaches side by side.

    uv run python -m bench.spend_ingest [--sizes 100000,1000000] [--accounts 10000]

A stand-in spend-log endpoint (bench/spendlog_server.py, its own process) serves n rows in the
real proxy's full row shape (about 9.9 KB of JSON each) with the real proxy's paging rules,
2.5 rows a second over 10,000 accounts (one row in ten on a key that is not ours, one in fifty a
failed call with spend 0). Every measurement runs in a fresh child process that imports the
worker as a pool child does, on a freshly migrated database holding the 10,000 accounts, so its
peak RSS (VmHWM) is its own. Measured, at each size:

- ours: `worker.spend.sync.sync()` over the whole history (windows of SPEND_WINDOW_S, pages of
  1,000, the defaults), then no-news runs after it: one a minute later (re-reading the 15-minute
  look-back, every row already stored) and, once the proxy has been quiet for longer than the
  look-back, the median of five more.
- fetch only: the same windows and pages fetched and decoded by worker.spend.fetch, nothing written.
- write only: the same rows, built in memory, written page by page with worker.spend.ingest.write_page
  (one transaction a page, as the sync does); and the raw PostgreSQL limits for the spend_logs
  rows: COPY, and executemany INSERT ... ON CONFLICT DO NOTHING.
- seed "whole log": every run pages through the whole log from the first row, keeps it all in
  memory and slices out the rows newer than its last run; same fetch, decoder and writer as ours.
- seed "whole days": every run re-reads each whole UTC day from its last run's day to today; same
  fetch, decoder and writer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench import common
from bench.spend_rows import History, bench_key

STEP_MS = 400
SETTLE_S = 120
LOOKBACK_S = 900
SEED_MEMORY_LIMIT = 8 * 1024**3  # address space for a seed child: it must not take the machine down


# -- the parent ---------------------------------------------------------------------------------

def history_for(size: int, accounts: int) -> History:
    # History ends yesterday 18:00 UTC, so "today" (by the simulated clock) is that day.
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = midnight - timedelta(hours=6)
    end_ms = int(end.timestamp() * 1000)
    return History(size, end_ms - size * STEP_MS, STEP_MS, accounts)


def prepare_database(history: History) -> None:
    from sqlalchemy import insert

    from worker.credits import keys
    from worker.db import dispose_engine, session_scope
    from worker.models import Account

    common.reset_database()
    with session_scope() as session:
        session.execute(insert(Account), [
            {"user_id": f"u-{k}", "key_alias": f"bench-u-{k}", "key_hash": history.hashes[k],
             "key_encrypted": keys.encrypt(bench_key(k)), "key_status": "active"}
            for k in range(history.accounts)])
    dispose_engine()


def child(scenario: str, history: History, env: dict[str, str]) -> dict[str, Any]:
    prefix = os.environ.get("BENCH_CHILD_PREFIX", "-m bench.spend_ingest").split()
    cmd = [sys.executable, *prefix, "--child", scenario, "--size", str(history.n),
           "--accounts", str(history.accounts), "--t0-ms", str(history.t0_ms)]
    started = time.perf_counter()
    out = subprocess.run(cmd, cwd=common.ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=3600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        tail = (out.stdout[-2000:] + out.stderr[-4000:]).strip()
        return {"scenario": scenario, "error": f"exit {out.returncode}: {tail}"}
    result = json.loads(lines[-1][len("RESULT "):])
    result["child_wall_s"] = round(time.perf_counter() - started, 1)
    return result


def server_stats(base_url: str) -> dict[str, float]:
    return httpx.get(f"{base_url}/_bench/stats", timeout=10).json()


def run_size(procs: common.Procs, size: int, accounts: int, scenarios: list[str]) -> dict[str, Any]:
    history = history_for(size, accounts)
    port = common.free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = procs.start(f"spendlog-{size}", [
        sys.executable, "-m", "bench.spendlog_server", "--port", str(port), "--master-key", common.STANDIN_KEY,
        "--rows", str(size), "--t0-ms", str(history.t0_ms), "--step-ms", str(STEP_MS), "--accounts", str(accounts)])
    common.wait_http(f"{base_url}/health", 60)
    env = common.configure(base_url, common.STANDIN_KEY, SPEND_SYNC_START=_iso(history.t0_ms - 1000),
                           SPEND_SETTLE_S=str(SETTLE_S), SPEND_LOOKBACK_S=str(LOOKBACK_S))
    results: dict[str, Any] = {"history": history.describe()}
    try:
        for scenario in scenarios:
            prepare_database(history)
            before = server_stats(base_url)
            print(f"[{size}] {scenario} ...", flush=True)
            at, load = datetime.now(UTC).isoformat(timespec="seconds"), round(os.getloadavg()[0], 2)
            r = child(scenario, history, env)
            r["measured_at"], r["load_average_at_start"] = at, load
            after = server_stats(base_url)
            r["standin_cpu_s"] = round(after["cpu_s"] - before["cpu_s"], 2)
            r["standin_mb_sent"] = round((after["bytes"] - before["bytes"]) / 1e6, 1)
            results[scenario] = r
            print(f"[{size}] {scenario}: {r}", flush=True)
    finally:
        procs.stop(server)
    return results


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


# -- the children -------------------------------------------------------------------------------

def _result(**figures: Any) -> None:
    figures["peak_rss_mb"] = round(common.peak_rss_mb(), 1)
    print("RESULT " + json.dumps(figures, default=str), flush=True)


def _span(history: History) -> tuple[datetime, datetime]:
    """What the first run reads: the configured start up to (now - settle)."""
    from worker.spend.windows import whole_second

    now = _now(history)
    return whole_second(datetime.fromtimestamp((history.t0_ms - 1000) / 1000, UTC)), whole_second(
        now - timedelta(seconds=SETTLE_S))


def _now(history: History) -> datetime:
    """The simulated clock of the first run: one minute after the last row has settled."""
    return datetime.fromtimestamp(history.last_ms / 1000, UTC) + timedelta(seconds=SETTLE_S + 60)


def _expected(history: History) -> tuple[int, int]:
    debits = sum(1 for i in range(history.n) if i % 10 != 3 and i % 50 != 7)
    return history.n, debits


def _stored() -> tuple[int, int]:
    from sqlalchemy import text

    from worker.db import session_scope

    with session_scope() as session:
        logs = session.execute(text("SELECT count(*) FROM spend_logs")).scalar_one()
        usage = session.execute(text("SELECT count(*) FROM ledger_entries WHERE kind = 'usage'")).scalar_one()
    return logs, usage


def child_ours(history: History) -> None:
    import tasks.spend  # noqa: F401 - load what a worker's pool child has loaded
    import worker.alerts.checks  # noqa: F401 - imported by the first run otherwise, inside the timing
    from worker.spend.sync import sync

    rss_before = common.rss_mb()
    now = _now(history)
    t = time.perf_counter()
    first = sync(now=now)
    elapsed = time.perf_counter() - t
    peak_ingest = common.peak_rss_mb()
    stored = _stored()
    t = time.perf_counter()
    lookback = sync(now=now + timedelta(seconds=60))
    lookback_s = time.perf_counter() - t
    quiet_at = now + timedelta(seconds=LOOKBACK_S + 180)
    sync(now=quiet_at)

    def quiet_runs(first: int) -> list[float]:
        times = []
        for n in range(first, first + 5):
            t = time.perf_counter()
            r = sync(now=quiet_at + timedelta(seconds=60 * n))
            times.append(time.perf_counter() - t)
            assert r.counts.inserted == 0
        return times

    # Straight after the backfill the new rows have no planner statistics yet; autovacuum's
    # ANALYZE comes within about a minute (autovacuum_naptime). Measured before and after it.
    with _statement_times() as slowest:
        quiet = quiet_runs(1)
    _analyze()
    with _statement_times() as slowest_analyzed:
        analyzed = quiet_runs(6)
    _result(
        rows=first.counts.rows_seen, inserted=first.counts.inserted, debited=first.counts.debited,
        pages=first.counts.pages, elapsed_s=round(elapsed, 2), rows_per_s=round(first.counts.inserted / elapsed),
        rss_before_mb=round(rss_before, 1), peak_rss_ingest_mb=round(peak_ingest, 1),
        stored=stored, expected=_expected(history), complete=stored == _expected(history),
        no_news_lookback_ms=round(lookback_s * 1000, 1), no_news_lookback_rows_reread=lookback.counts.rows_seen,
        no_news_lookback_inserted=lookback.counts.inserted,
        no_news_quiet_ms=[round(q * 1000, 1) for q in quiet],
        no_news_quiet_median_ms=round(statistics.median(quiet) * 1000, 1),
        no_news_quiet_analyzed_ms=[round(q * 1000, 1) for q in analyzed],
        no_news_quiet_analyzed_median_ms=round(statistics.median(analyzed) * 1000, 1),
        no_news_quiet_costliest=slowest, no_news_quiet_analyzed_costliest=slowest_analyzed,
    )


@contextmanager
def _statement_times() -> Iterator[list[Any]]:
    """The statements (and proxy requests) that took the most time inside the block, summed."""
    from sqlalchemy import event

    from worker import proxy
    from worker.db import engine

    spent: dict[str, float] = {}
    started: list[float] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started.append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        key = " ".join(statement.split())[:90]
        spent[key] = spent.get(key, 0.0) + time.perf_counter() - started.pop()

    def observe(endpoint: str, seconds: float, outcome: str) -> None:
        spent[f"HTTP {endpoint}"] = spent.get(f"HTTP {endpoint}", 0.0) + seconds

    event.listen(engine(), "before_cursor_execute", before)
    event.listen(engine(), "after_cursor_execute", after)
    proxy.observers.append(observe)
    top: list[Any] = []
    try:
        yield top
    finally:
        event.remove(engine(), "before_cursor_execute", before)
        event.remove(engine(), "after_cursor_execute", after)
        proxy.observers.remove(observe)
        top.extend([k, round(v * 1000, 1)] for k, v in sorted(spent.items(), key=lambda kv: -kv[1])[:6])


def _analyze() -> None:
    from sqlalchemy import text

    from worker.db import engine

    with engine().connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()


def _pages(window: Any, size: int) -> Any:
    """Every page of a window, as the sync pages it (until a short page)."""
    from worker.spend.fetch import fetch_page, is_last

    number = 1
    while True:
        page = fetch_page(window, number, size)
        yield page
        if is_last(page, size):
            return
        number += 1


def child_fetch(history: History) -> None:
    import tasks.spend  # noqa: F401
    from worker.settings import get_settings
    from worker.spend.windows import windows

    start, end = _span(history)
    s = get_settings()
    rows = pages = 0
    t = time.perf_counter()
    for window in windows(start, end, s.spend_window_s):
        for page in _pages(window, s.spend_page_size):
            rows += len(page.data)
            pages += 1
    elapsed = time.perf_counter() - t
    _result(rows=rows, pages=pages, elapsed_s=round(elapsed, 2), rows_per_s=round(rows / elapsed))


def _model_pages(history: History) -> Any:
    """The rows of each page the sync would store, built in memory (no JSON, no HTTP)."""
    from schemas.proxy import SpendLogRow
    from worker.settings import get_settings
    from worker.spend.windows import windows

    start, end = _span(history)
    s = get_settings()
    for window in windows(start, end, s.spend_window_s):
        lo, hi = history.between(int(window.start.timestamp() * 1000), int(window.end.timestamp() * 1000))
        for top in range(hi, lo, -s.spend_page_size):
            rows = []
            for i in range(top - 1, max(lo, top - s.spend_page_size) - 1, -1):
                r = history.row(i)
                rows.append(SpendLogRow(
                    request_id=r.request_id, api_key=r.api_key, spend=r.spend, status=r.status,
                    model=f"openai/{r.model}", model_group=r.model, user=r.user,
                    startTime=datetime.fromtimestamp(r.start_ms / 1000, UTC),
                    endTime=datetime.fromtimestamp(r.end_ms / 1000, UTC), prompt_tokens=r.prompt_tokens,
                    completion_tokens=r.completion_tokens, total_tokens=r.prompt_tokens + r.completion_tokens))
            yield rows


def child_write(history: History) -> None:
    import tasks.spend  # noqa: F401
    from worker.db import session_scope
    from worker.spend.ingest import write_page

    written = pages = 0
    spent = 0.0
    for rows in _model_pages(history):
        t = time.perf_counter()
        with session_scope() as session:
            written += write_page(session, rows).inserted
        spent += time.perf_counter() - t
        pages += 1
    _result(rows=written, pages=pages, elapsed_s=round(spent, 2), rows_per_s=round(written / spent),
            stored=_stored(), expected=_expected(history))


def child_raw_insert(history: History) -> None:
    """PostgreSQL's own limits for the spend_logs rows: COPY, then executemany ON CONFLICT DO NOTHING."""
    import psycopg

    from worker.credits.ledger import money
    from worker.settings import get_settings

    url = get_settings().database_url.replace("postgresql+psycopg://", "postgresql://")
    columns = "request_id, api_key, user_id, model, spend, prompt_tokens, completion_tokens, status, start_time"
    owners = {h: f"u-{k}" for k, h in enumerate(history.hashes)}
    figures: dict[str, Any] = {}
    with psycopg.connect(url) as conn:
        for how in ("copy", "executemany_on_conflict"):
            conn.execute("TRUNCATE spend_logs CASCADE")
            conn.commit()
            spent, count = 0.0, 0
            for rows in _model_pages(history):
                tuples = [(r.request_id, r.api_key, owners.get(r.api_key), r.model_group, money(r.spend),
                           r.prompt_tokens, r.completion_tokens, r.status, r.startTime) for r in rows]
                t = time.perf_counter()
                with conn.cursor() as cur:
                    if how == "copy":
                        with cur.copy(f"COPY spend_logs ({columns}) FROM STDIN") as copy:
                            for row in tuples:
                                copy.write_row(row)
                    else:
                        cur.executemany(f"INSERT INTO spend_logs ({columns}) VALUES "
                                        "(%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", tuples)
                conn.commit()
                spent += time.perf_counter() - t
                count += len(tuples)
            figures[how] = {"rows": count, "elapsed_s": round(spent, 2), "rows_per_s": round(count / spent)}
    _result(**figures)


def _seed_write(rows: list[Any]) -> int:
    from worker.db import session_scope
    from worker.spend.ingest import write_page

    inserted = 0
    for i in range(0, len(rows), 1000):
        with session_scope() as session:
            inserted += write_page(session, rows[i:i + 1000]).inserted
    return inserted


def child_seed_whole_log(history: History) -> None:
    """Every run: page through the whole log, hold it, keep what is newer than the last run."""
    import tasks.spend  # noqa: F401
    from worker.spend.windows import Window

    resource.setrlimit(resource.RLIMIT_AS, (SEED_MEMORY_LIMIT, SEED_MEMORY_LIMIT))
    start, end = _span(history)

    def run(since: datetime | None, end: datetime) -> tuple[int, int, datetime | None, float]:
        t = time.perf_counter()
        everything = []
        for page in _pages(Window(start, end), 1000):
            everything.extend(page.data)
        new = [r for r in everything if since is None or r.startTime > since]
        inserted = _seed_write(new)
        newest = max((r.startTime for r in everything), default=since)
        return len(everything), inserted, newest, time.perf_counter() - t

    seen, inserted, newest, elapsed = run(None, end)
    peak_ingest = common.peak_rss_mb()
    stored = _stored()
    _, again, _, no_news = run(newest, end + timedelta(seconds=60))
    _result(rows=seen, inserted=inserted, elapsed_s=round(elapsed, 2), rows_per_s=round(inserted / elapsed),
            peak_rss_ingest_mb=round(peak_ingest, 1), stored=stored, expected=_expected(history),
            no_news_ms=round(no_news * 1000, 1), no_news_inserted=again)


def child_seed_whole_days(history: History) -> None:
    """Every run: re-read each whole UTC day from the last run's day to today."""
    import tasks.spend  # noqa: F401
    from worker.db import session_scope
    from worker.spend.ingest import write_page
    from worker.spend.windows import Window

    resource.setrlimit(resource.RLIMIT_AS, (SEED_MEMORY_LIMIT, SEED_MEMORY_LIMIT))
    start, end = _span(history)

    def run(since: datetime, end: datetime) -> tuple[int, int, float]:
        t = time.perf_counter()
        seen = inserted = 0
        day = since.replace(hour=0, minute=0, second=0)
        while day <= end:
            for page in _pages(Window(day, day + timedelta(days=1)), 1000):
                with session_scope() as session:
                    inserted += write_page(session, page.data).inserted
                seen += len(page.data)
            day += timedelta(days=1)
        return seen, inserted, time.perf_counter() - t

    seen, inserted, elapsed = run(start, end)
    peak_ingest = common.peak_rss_mb()
    stored = _stored()
    reread, again, no_news = run(end, end + timedelta(seconds=60))
    _result(rows=seen, inserted=inserted, elapsed_s=round(elapsed, 2), rows_per_s=round(inserted / elapsed),
            peak_rss_ingest_mb=round(peak_ingest, 1), stored=stored, expected=_expected(history),
            no_news_ms=round(no_news * 1000, 1), no_news_rows_reread=reread, no_news_inserted=again)


CHILDREN = {"ours": child_ours, "fetch_only": child_fetch, "write_only": child_write,
            "raw_insert": child_raw_insert, "seed_whole_log": child_seed_whole_log,
            "seed_whole_days": child_seed_whole_days}


# -- report ------------------------------------------------------------------------------------

def ratio(ours: float | None, theirs: float | None) -> float | None:
    return round(ours / theirs, 3) if ours and theirs else None


def report(run: common.Run, sizes: dict[int, dict[str, Any]]) -> None:
    table = []
    summary: dict[str, Any] = {}
    for size, r in sizes.items():
        ours, fetch, write, raw = r.get("ours", {}), r.get("fetch_only", {}), r.get("write_only", {}), \
            r.get("raw_insert", {})
        log, days = r.get("seed_whole_log", {}), r.get("seed_whole_days", {})
        limits = [x for x in (fetch.get("rows_per_s"), write.get("rows_per_s")) if x]
        slower = min(limits) if limits else None
        s = summary[size] = {
            "rows_per_s": ours.get("rows_per_s"), "peak_rss_mb": ours.get("peak_rss_mb"),
            "fetch_only_rows_per_s": fetch.get("rows_per_s"), "write_only_rows_per_s": write.get("rows_per_s"),
            "copy_rows_per_s": raw.get("copy", {}).get("rows_per_s"),
            "executemany_rows_per_s": raw.get("executemany_on_conflict", {}).get("rows_per_s"),
            "share_of_slower_limit": ratio(ours.get("rows_per_s"), slower),
            "no_news_quiet_median_ms": ours.get("no_news_quiet_median_ms"),
            "no_news_quiet_analyzed_median_ms": ours.get("no_news_quiet_analyzed_median_ms"),
            "no_news_lookback_ms": ours.get("no_news_lookback_ms"),
            "vs_whole_log": {"time": ratio(ours.get("elapsed_s"), log.get("elapsed_s")),
                             "peak_rss": ratio(ours.get("peak_rss_mb"), log.get("peak_rss_mb")),
                             "no_news_time": ratio(ours.get("no_news_lookback_ms"), log.get("no_news_ms"))},
            "vs_whole_days": {"time": ratio(ours.get("elapsed_s"), days.get("elapsed_s")),
                              "peak_rss": ratio(ours.get("peak_rss_mb"), days.get("peak_rss_mb")),
                              "no_news_time": ratio(ours.get("no_news_lookback_ms"), days.get("no_news_ms"))},
        }
        n = f"{size:,}"
        table.append((n, "when (load average at start)", "", "; ".join(
            f"{name} {r[name]['measured_at'][11:16]} ({r[name]['load_average_at_start']})"
            for name in CHILDREN if "measured_at" in r.get(name, {}))))
        table += [
            (n, "ours: sync of the whole history", f"{ours.get('rows_per_s')} rows/s",
             f"{ours.get('elapsed_s')} s, peak RSS {ours.get('peak_rss_mb')} MB, complete: {ours.get('complete')}, "
             f"stand-in CPU {ours.get('standin_cpu_s')} s"),
            (n, "ours: no-news run (look-back re-read)", f"{ours.get('no_news_lookback_ms')} ms",
             f"{ours.get('no_news_lookback_rows_reread')} rows re-read, 0 new"),
            (n, "ours: no-news run (quiet proxy), median of 5, right after the backfill",
             f"{ours.get('no_news_quiet_median_ms')} ms", f"{ours.get('no_news_quiet_ms')}"),
            (n, "ours: the same once ANALYZE has run (autovacuum does within a minute)",
             f"{ours.get('no_news_quiet_analyzed_median_ms')} ms", f"{ours.get('no_news_quiet_analyzed_ms')}"),
            (n, "limit: fetch + decode only", f"{fetch.get('rows_per_s')} rows/s",
             f"{fetch.get('pages')} pages in {fetch.get('elapsed_s')} s, peak RSS {fetch.get('peak_rss_mb')} MB"),
            (n, "limit: write_page only (no fetch)", f"{write.get('rows_per_s')} rows/s",
             f"{write.get('elapsed_s')} s of writing"),
            (n, "PostgreSQL: COPY spend_logs", f"{s['copy_rows_per_s']} rows/s", ""),
            (n, "PostgreSQL: executemany ON CONFLICT DO NOTHING", f"{s['executemany_rows_per_s']} rows/s", ""),
            (n, "ours / slower limit", f"{s['share_of_slower_limit']}", "target >= 0.5"),
            (n, "seed whole log: ingest", f"{log.get('rows_per_s')} rows/s",
             f"{log.get('elapsed_s')} s, peak RSS {log.get('peak_rss_mb')} MB; no-news {log.get('no_news_ms')} ms"
             + (f"; {log['error'][:200]}" if "error" in log else "")),
            (n, "seed whole days: ingest", f"{days.get('rows_per_s')} rows/s",
             f"{days.get('elapsed_s')} s, peak RSS {days.get('peak_rss_mb')} MB; no-news {days.get('no_news_ms')} ms "
             f"({days.get('no_news_rows_reread')} rows re-read)"
             + (f"; {days['error'][:200]}" if "error" in days else "")),
            (n, "ours / whole log (time, RSS, no-news)",
             f"{s['vs_whole_log']['time']}, {s['vs_whole_log']['peak_rss']}, {s['vs_whole_log']['no_news_time']}",
             "below 1 means ours is smaller"),
            (n, "ours / whole days (time, RSS, no-news)", f"{s['vs_whole_days']['time']}, "
             f"{s['vs_whole_days']['peak_rss']}, {s['vs_whole_days']['no_news_time']}", ""),
        ]
    rss = [summary[n]["peak_rss_mb"] for n in summary if summary[n]["peak_rss_mb"]]
    targets = {
        "rows_per_s>=30000": {n: (summary[n]["rows_per_s"] or 0) >= 30_000 for n in summary},
        "share_of_slower_limit>=0.5": {n: (summary[n]["share_of_slower_limit"] or 0) >= 0.5 for n in summary},
        "peak_rss_mb<200": {n: (summary[n]["peak_rss_mb"] or 1e9) < 200 for n in summary},
        "peak_rss_flat_within_10pct": (max(rss) / min(rss) <= 1.1) if len(rss) > 1 else None,
        "no_news_quiet_ms<50": {n: (summary[n]["no_news_quiet_median_ms"] or 1e9) < 50 for n in summary},
        "no_news_quiet_analyzed_ms<50": {n: (summary[n]["no_news_quiet_analyzed_median_ms"] or 1e9) < 50
                                         for n in summary},
    }
    notes = [
        f"targets: {json.dumps(targets)}",
        "rows: the real proxy's row shape (litellm 1.106.2), about 9.9 KB of JSON each, 2.5 rows/s over 10,000 "
        "accounts; pages of 1,000 are about 10 MB",
        "each figure from a fresh child process on a freshly migrated database; the stand-in spend-log server, "
        "PostgreSQL and the measured process share the 2 cores (stand-in CPU shown for the sync)",
        "seeds use our fetch, decoder and write_page, so the ratios compare the strategies only",
        "ratio time: ingest seconds, ours / theirs; no-news: our look-back no-news run / theirs",
    ]
    run.write({"sizes": sizes, "summary": summary, "targets": targets}, table,
              ("rows", "measure", "result", "detail"), notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--scenarios", default=",".join(CHILDREN))
    parser.add_argument("--merge", action="store_true",
                        help="keep the figures of sizes not measured now from bench/results/spend_ingest.json")
    parser.add_argument("--child", choices=sorted(CHILDREN))
    parser.add_argument("--size", type=int)
    parser.add_argument("--t0-ms", type=int)
    args = parser.parse_args()
    if args.child:
        CHILDREN[args.child](History(args.size, args.t0_ms, STEP_MS, args.accounts))
        return
    run = common.Run("spend_ingest")
    procs = common.Procs()
    sizes: dict[int, dict[str, Any]] = {}
    previous = common.RESULTS / "spend_ingest.json"
    if args.merge and previous.exists():  # re-measure some sizes, keep the others' figures
        sizes = {int(n): r for n, r in json.loads(previous.read_text())["figures"]["sizes"].items()}
    try:
        for size in (int(x) for x in args.sizes.split(",")):
            sizes.setdefault(size, {}).update(run_size(procs, size, args.accounts, args.scenarios.split(",")))
    finally:
        procs.stop_all()
    report(run, dict(sorted(sizes.items())))


if __name__ == "__main__":
    main()
