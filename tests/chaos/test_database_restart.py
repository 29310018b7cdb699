"""Scenario 4, database restart: a private PostgreSQL cluster (never the machine's shared one) is
stopped hard and started again mid-burst, while a spend sync is reading the proxy's spend logs.
Tasks that failed on it are retried and applied, and the spend cursor never passes a row that is
not stored."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.chaos.harness import (
    Clock,
    Event,
    PrivatePostgres,
    Publisher,
    assert_no_secrets,
    command_for,
    make_stream,
    plain_url,
    poll,
    read_state,
    record,
    retries_in_logs,
    settle,
)
from tests.conftest import TEST_ENV

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]
BURST = 600
SIGNUPS = 40
SPEND_ROWS = 8000
DOWN_S = 5
WORKERS = 3


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres(Path(tempfile.mkdtemp(prefix="chaos-pg-"))).init()
    pg.start()
    try:
        from worker.migrate import upgrade

        upgrade(pg.url("credits_chaos"))
        yield pg
    finally:
        pg.destroy()


def spend_state(db: str, proxy) -> dict[str, object]:
    """The cursor, and whether every proxy row before it is stored (one snapshot of the database)."""
    with psycopg.connect(plain_url(db), connect_timeout=2) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        row = conn.execute("SELECT position FROM spend_sync_cursor").fetchone()
        position = row[0] if row else None
        stored = conn.execute("SELECT count(*) FROM spend_logs WHERE start_time < %s",
                              (position or datetime(1970, 1, 1, tzinfo=UTC),)).fetchone()[0]
        total = conn.execute("SELECT count(*) FROM spend_logs").fetchone()[0]
        conn.execute("COMMIT")
    with proxy.lock:
        before = sum(1 for t, _, _ in proxy.logs if position is not None and t < position.timestamp())
    return {"position": position, "stored_before": stored, "proxy_before": before, "stored": total}


def test_postgres_stopped_hard_and_restarted_mid_burst_and_mid_spend_sync(private_pg, pool, chaos_proxy, broker):
    db = private_pg.url("credits_chaos")
    now = datetime.now(UTC)
    first_row, last_row = now - timedelta(minutes=100), now - timedelta(minutes=5)
    pool.env.update({
        "DATABASE_URL": db,
        "SPEND_SYNC_START": (first_row - timedelta(minutes=1)).isoformat(),
        # Short windows: a run reads some 570 of them, long enough for the restart to land in it.
        "SPEND_WINDOW_S": "10", "SPEND_PAGE_SIZE": "100", "SPEND_SETTLE_S": "60",
    })
    pool.start_many(WORKERS)
    publisher = Publisher(TEST_ENV["REDIS_URL"])

    # Accounts whose keys the proxy's spend logs will name.
    users = [f"spender{i:02d}@example.com" for i in range(SIGNUPS)]
    signups = [Event("events.signup", {"user_id": u, "occurred_at": "2026-11-20T08:00:00Z"}, f"signup:{u}", u)
               for u in users]
    publisher.send_all(signups)
    state, _ = settle(db, chaos_proxy, broker, signups, 120, "the spenders' accounts")
    hashes = [a["hash"] for a in state.accounts.values()]
    step = (last_row - first_row) / SPEND_ROWS
    for i in range(SPEND_ROWS):
        chaos_proxy.add_spend(hashes[i % len(hashes)], 0.0125, first_row + step * i, request_id=f"req-{i:05d}")

    events = make_stream(BURST, seed=4)
    violations: list[dict[str, object]] = []
    samples = {"n": 0, "failed": 0}
    stop = threading.Event()

    def beat_and_watch() -> None:
        # As beat would: spend.sync every second. And the invariant, checked between sends.
        while not stop.is_set():
            try:
                publisher.send_task("spend.sync")
            except Exception:  # noqa: BLE001 - the shared Redis is not what this scenario restarts
                pass
            deadline = time.monotonic() + 1
            while time.monotonic() < deadline and not stop.is_set():
                try:
                    s = spend_state(db, chaos_proxy)
                    samples["n"] += 1
                    if s["position"] is not None and s["stored_before"] < s["proxy_before"]:
                        violations.append(s)
                except psycopg.Error:
                    samples["failed"] += 1  # the database is down: nothing to check
                time.sleep(0.1)

    clock = Clock()
    watcher = threading.Thread(target=beat_and_watch, daemon=True)
    watcher.start()
    publisher.send_all(events)

    def mid_burst() -> bool:
        st = spend_state(db, chaos_proxy)
        applied = len(read_state(db).ledger) - SIGNUPS
        return applied >= BURST // 10 and 0 < st["stored"] < SPEND_ROWS // 2

    poll(mid_burst, 120, "the burst and the spend sync both under way", 0.05)
    applied_before = len(read_state(db).ledger) - SIGNUPS
    spend_before = spend_state(db, chaos_proxy)
    stopped_at = clock()
    private_pg.stop("immediate")  # a crash: every backend killed, no checkpoint
    time.sleep(DOWN_S)  # the fault: how long the database stays away
    private_pg.start()  # crash recovery, then accepting connections again
    restarted_at = clock()

    everything = [*signups, *events]
    state, verdict = settle(db, chaos_proxy, broker, everything, 300, "every event applied after the restart")
    drained_at = clock()

    def spend_done() -> bool:
        s = spend_state(db, chaos_proxy)
        return s["stored"] == SPEND_ROWS and s["position"] is not None and s["position"] >= last_row

    poll(spend_done, 300, "the spend sync to store every row and pass the last one")
    stop.set()
    watcher.join(30)
    spend_s = clock()
    final = read_state(db, chaos_proxy)
    with psycopg.connect(plain_url(db)) as conn:
        runs = dict(conn.execute("SELECT status, count(*) FROM spend_sync_runs GROUP BY status").fetchall())
    db_retries = retries_in_logs(line for line in pool.log_lines()
                                 if "perational" in line or "connection" in line or "terminat" in line)
    # Window reads the crash cut off: their tasks retried, and took their windows back at once.
    window_retries = [line for line in pool.log_lines() if "Task spend.window[" in line and "retry:" in line]
    lines = assert_no_secrets(pool, db, extra_logs=[private_pg.log])

    record(
        "4-database-restart",
        title="Database restart",
        command=command_for("tests/chaos/test_database_restart.py"),
        injects=f"a private PostgreSQL 15 cluster stopped with `pg_ctl stop -m immediate` (a crash) "
                f"{stopped_at} s into a burst of {BURST} events and a spend sync of {SPEND_ROWS} spend-log rows, "
                f"down {DOWN_S} s, then started (crash recovery); {WORKERS} workers, spend.sync sent every 1 s",
        events_sent=BURST + SIGNUPS, messages_published=BURST + SIGNUPS, applied=verdict.applied,
        duplicated=verdict.duplicated, lost=len(verdict.lost), dead_lettered=len(final.dead), drain_s=drained_at,
        extra={"applied_before_stop": applied_before, "spend_rows_stored_before_stop": spend_before["stored"],
               "restarted_at_s": restarted_at, "drain_after_restart_s": round(drained_at - restarted_at, 1),
               "retries_logged_for_database_errors": len(db_retries), "spend_rows": SPEND_ROWS,
               "spend_rows_stored": spend_state(db, chaos_proxy)["stored"],
               "usage_entries": len(final.usage), "spend_sync_done_s": spend_s, "spend_sync_runs": runs,
               "spend_window_retries": len(window_retries),
               "cursor_checks": samples["n"], "cursor_checks_while_down": samples["failed"],
               "cursor_violations": len(violations), "log_lines_scanned": lines},
    )
    assert spend_before["stored"] < SPEND_ROWS and window_retries, "the restart did not interrupt a spend window's read"
    assert not violations, violations[:3]
    assert samples["n"] > 20
    assert not final.dead, final.dead[:3]
    assert verdict.exact, verdict.summary()
    assert db_retries, "no task retried a database error: the restart hit nothing"
    # Every row debited once: usage entries and their sum match the proxy's rows.
    assert len(final.usage) == SPEND_ROWS
    assert sum(final.usage.values()) == Decimal("0.0125") * SPEND_ROWS
