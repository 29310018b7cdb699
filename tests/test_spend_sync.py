"""Spend sync: every proxy spend-log row stored once, every one of ours with spend debited once.

The stand-in keeps the proxy's rules: offset pages newest first, inclusive whole-second
bounds, page_size <= 1000, counts capped at 10,000. Times are explicit; nothing sleeps.
"""

from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from tests.fixtures import wait_for
from tests.spend_helpers import ALICE, BASE, BOB, SETTLE, STRANGER, account, exact, last_run, position, stored, usage
from worker import proxy as proxy_client
from worker.db import session_scope
from worker.models import LedgerEntry, SpendSyncRun
from worker.proxy import TransientProxyError
from worker.settings import get_settings
from worker.spend import fetch as spend_fetch
from worker.spend import runs as spend_runs
from worker.spend.sync import sync


@pytest.fixture(autouse=True)
def _pages_of_1000(monkeypatch):
    # These tests count pages of 1,000 rows, the largest the proxy serves (the default is smaller,
    # to keep the proxy's users unhurt: tests/test_spend_quiet.py).
    monkeypatch.setenv("SPEND_PAGE_SIZE", "1000")
    get_settings.cache_clear()


def test_25000_rows_over_two_hours_are_ingested_exactly_once(proxy):
    account("alice", ALICE)
    account("bob", BOB)
    expected_count, expected_total, debited_by = 0, Decimal(0), {"alice": Decimal(0), "bob": Decimal(0)}
    for i in range(25_000):
        key = STRANGER if i % 10 == 0 else (ALICE if i % 2 else BOB)
        spend = 0.0 if i % 50 == 7 else 0.0001 * (i % 7 + 1)
        proxy.add_spend(key, spend, BASE + timedelta(seconds=i * 7200 / 25_000))
        if key != STRANGER and spend > 0:
            expected_count += 1
            expected_total += exact(spend)
            debited_by["alice" if key == ALICE else "bob"] += exact(spend)
    now = BASE + timedelta(hours=2, minutes=5)

    first = sync(now=now)
    assert (first.counts.inserted, first.counts.debited) == (25_000, expected_count)
    assert first.counts.skipped == 25_000 - expected_count
    assert stored() == 25_000 and usage() == (expected_count, expected_total)
    assert position() == now - SETTLE
    with session_scope() as session:
        assert session.execute(text("SELECT count(*) FROM spend_logs WHERE user_id IS NULL")).scalar() == 2_500
        for user, total in debited_by.items():
            row = session.execute(text("SELECT spent_usd, last_spend_at FROM account_balances WHERE user_id = :u"),
                                  {"u": user}).one()
            assert row.spent_usd == total and row.last_spend_at is not None

    assert first.counts.rows_seen <= 25_000 * 1.01  # each row fetched once, plus a count per window

    assert sync(now=now).counts.rows_seen == 0  # every window was just verified: nothing is due
    later = sync(now=now + timedelta(minutes=10))  # every window is due again: verified by its count
    assert (later.counts.inserted, later.counts.debited) == (0, 0)
    assert 0 < later.counts.rows_seen <= 30  # a row per window, not the windows' 25,000 again
    assert stored() == 25_000 and usage() == (expected_count, expected_total)
    run = last_run()
    assert run.status == "ok" and run.inserted == 0 and run.rows_seen == later.counts.rows_seen


def test_rows_written_late_into_a_synced_window_are_picked_up(proxy, monkeypatch):
    monkeypatch.setenv("SPEND_PAGE_SIZE", "100")  # the smallest page older proxies allow
    get_settings.cache_clear()
    account("alice", ALICE)
    for i in range(900):  # 150 rows a window: two pages of 100
        proxy.add_spend(ALICE, 0.002, BASE + timedelta(seconds=2 * i + 0.25))
    now = BASE + timedelta(minutes=40)
    assert sync(now=now).counts.debited == 900
    cursor = position()
    assert cursor == now - SETTLE
    # The proxy's batch writer files a long request under its start, well after that was read.
    late = [proxy.add_spend(ALICE, 0.5, cursor - timedelta(seconds=s)) for s in (1, 299.5, 600, 899)]
    later = sync(now=now + timedelta(minutes=1))
    assert (later.counts.inserted, later.counts.debited) == (4, 4)
    assert usage() == (904, Decimal("1.8") + Decimal("2.0"))
    with session_scope() as session:
        keys = set(session.execute(select(LedgerEntry.idempotency_key)).scalars())
    assert {f"spend:{row['request_id']}" for row in late} <= keys


def test_row_on_a_window_boundary_is_debited_once(proxy):
    account("alice", ALICE)
    on_the_second = [BASE, BASE + timedelta(minutes=5), BASE + timedelta(minutes=10)]
    for moment in on_the_second:
        proxy.add_spend(ALICE, 0.25, moment)
    proxy.add_spend(ALICE, 0.25, BASE + timedelta(minutes=5, milliseconds=500))
    now = BASE + timedelta(minutes=30)

    first = sync(now=now)
    # 05:00.000 and 10:00.000 each came back in both windows that share their second, and each of
    # the three windows with rows was then counted with a page of one row.
    assert (first.counts.rows_seen, first.counts.inserted, first.counts.debited) == (9, 4, 4)
    sync(now=now)
    sync(now=now + timedelta(minutes=3))
    assert usage() == (4, Decimal("1.00"))


def test_window_over_the_count_cap_is_split_and_fully_read(proxy, monkeypatch):
    account("alice", ALICE)
    for i in range(30_000):
        proxy.add_spend(ALICE if i % 3 else STRANGER, 0.001, BASE + timedelta(seconds=i / 100 + 0.005))
    calls: list[tuple[float, int]] = []
    real_fetch = spend_fetch.fetch

    def counting(window, number, size, api_key=None):
        calls.append((window.seconds, number))
        return real_fetch(window, number, size, api_key)

    monkeypatch.setattr(spend_fetch, "fetch", counting)
    result = sync(now=BASE + timedelta(seconds=300) + SETTLE)
    assert result.span.seconds == 300 and result.counts.inserted == 30_000
    assert stored() == 30_000 and usage() == (20_000, Decimal(20))
    assert max(number for _, number in calls) <= 10  # offsets stay small
    assert min(seconds for seconds, _ in calls) < 300  # the window was split


def test_proxy_failing_mid_window_resumes_at_the_last_complete_window(proxy):
    account("alice", ALICE)
    for i in range(10_000):  # 2,500 rows a window: three pages each
        proxy.add_spend(ALICE, 0.003, BASE + timedelta(seconds=0.05 + i * 0.12))
    now = BASE + timedelta(minutes=20) + SETTLE
    proxy.fail_after = 5  # window 1 (three pages and its count), window 2's first page, then HTTP 500

    with pytest.raises(TransientProxyError):
        sync(now=now)
    assert position() == BASE + timedelta(minutes=5)
    assert stored() == 3_500  # window 2's first page was kept; its cursor did not move
    run = last_run()
    assert run.status == "error" and "500" in run.error and run.pages == 4

    proxy.mode = "ok"
    again = sync(now=now)
    assert again.counts.inserted == 6_500
    assert stored() == 10_000 and usage() == (10_000, Decimal("30.000"))
    assert position() == BASE + timedelta(minutes=20) and last_run().status == "ok"


def test_row_slipping_past_a_page_boundary_is_caught_by_the_recount(proxy, monkeypatch):
    """The proxy orders by startTime alone: rows sharing one can swap between two page queries."""
    account("alice", ALICE)
    for i in range(1_500):
        proxy.add_spend(ALICE, 0.01, BASE + timedelta(seconds=0.5 + i * 0.1))
    real_fetch, lost = spend_fetch.fetch, []

    def unstable(window, number, size, api_key=None):
        page = real_fetch(window, number, size, api_key)
        if number == 2 and not lost:  # the first row of page 2 went to page 1's place, unseen
            lost.append(page.data.pop(0).request_id)
        return page

    monkeypatch.setattr(spend_fetch, "fetch", unstable)
    result = sync(now=BASE + timedelta(minutes=5) + SETTLE)
    assert lost and stored() == 1_500 and usage() == (1_500, Decimal("15.00"))
    assert result.counts.inserted == 1_500 and position() == BASE + timedelta(minutes=5)


def test_first_run_starts_at_spend_sync_start(proxy, monkeypatch):
    monkeypatch.setenv("SPEND_SYNC_START", "2026-11-20T07:30:00")  # no offset: UTC
    get_settings.cache_clear()
    account("alice", ALICE, created=BASE)
    proxy.add_spend(ALICE, 0.5, BASE - timedelta(minutes=20))  # before the account, after the start
    proxy.add_spend(ALICE, 0.25, BASE - timedelta(minutes=40))  # before the start: not ours to read
    result = sync(now=BASE + timedelta(minutes=10))
    assert result.span.start == BASE - timedelta(minutes=30)
    assert usage() == (1, Decimal("0.5"))


def test_two_syncs_at_once_do_the_work_once(proxy):
    account("alice", ALICE)
    for i in range(3_000):
        proxy.add_spend(ALICE, 0.01, BASE + timedelta(seconds=0.5 + i * 0.4))
    release = threading.Event()

    def held(done_s: float, total_s: float) -> None:
        release.wait(30)  # the winner keeps the lock until the loser has come and gone

    now = BASE + timedelta(minutes=25)
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(sync, now=now, progress=held) for _ in range(2)]
        finished, _ = wait(futures, timeout=30, return_when=FIRST_COMPLETED)
        assert finished and next(iter(finished)).result().skipped
        release.set()
        results = [f.result(timeout=60) for f in futures]
    assert sorted(r.skipped for r in results) == [False, True]
    assert usage() == (3_000, Decimal("30.00")) and stored() == 3_000
    with session_scope() as session:
        assert session.execute(select(func.count()).select_from(SpendSyncRun)).scalar_one() == 1


def test_missing_v2_endpoint_falls_back_to_ui(proxy, monkeypatch):
    account("alice", ALICE)
    proxy.add_spend(ALICE, 0.75, BASE + timedelta(minutes=1))
    real_call = proxy_client.call

    def no_v2(method, endpoint, **kwargs):
        if endpoint == spend_fetch.V2:
            raise proxy_client.PermanentProxyError(endpoint, "HTTP 404 Not Found", 404)
        return real_call(method, endpoint, **kwargs)

    monkeypatch.setattr(spend_fetch, "_path", spend_fetch.V2)
    monkeypatch.setattr(proxy_client, "call", no_v2)
    sync(now=BASE + timedelta(minutes=10))
    assert usage() == (1, Decimal("0.75")) and proxy.requests.get("/spend/logs/ui", 0) >= 1


def test_status_reports_cursor_lag_and_last_run(proxy):
    with session_scope() as session:
        assert spend_runs.status(session).cursor is None
    account("alice", ALICE)
    proxy.add_spend(ALICE, 0.1, BASE + timedelta(minutes=2))
    now = BASE + timedelta(minutes=10)
    sync(now=now)
    with session_scope() as session:
        state = spend_runs.status(session, now=now + timedelta(seconds=30))
    assert state.cursor == now - SETTLE and state.lag_seconds == 150
    assert state.last_run["status"] == "ok" and state.last_run["debited"] == 1
    assert state.last_run["window_start"] == BASE and state.last_run["window_end"] == now - SETTLE


def test_cli_backfill_and_daily_usage(proxy):
    from typer.testing import CliRunner

    from worker.cli.main import app

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    account("alice", ALICE, created=start)
    for i in range(30):
        proxy.add_spend(ALICE, 0.02, start + timedelta(hours=1, seconds=10 * i + 0.5))
    proxy.add_spend(ALICE, 0.0, start + timedelta(hours=1, minutes=2))
    runner = CliRunner()
    frm, to = (start + timedelta(minutes=50)).isoformat(), (start + timedelta(hours=1, minutes=30)).isoformat()
    out = runner.invoke(app, ["sync-spend", "--from", frm, "--to", to, "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert (summary["inserted"], summary["debited"], summary["skipped"]) == (31, 30, 1)
    # A range after the cursor is read, but the cursor never jumps over the gap before it.
    assert datetime.fromisoformat(summary["cursor"]) == start

    out = runner.invoke(app, ["usage", "alice", "--days", "2", "--json"])
    assert out.exit_code == 0, out.output
    days = json.loads(out.stdout)
    assert sum(d["requests"] for d in days) == 30 and sum(Decimal(d["spend_usd"]) for d in days) == Decimal("0.6")
    assert sum(d["failed_requests"] for d in days) == 1  # the proxy's refused call is not a request
    assert {d["model"] for d in days} == {"fake-gpt"}
    assert runner.invoke(app, ["usage", "nobody", "--days", "2"]).exit_code == 1


def test_beat_task_sends_the_due_windows_and_their_tasks_read_them(proxy, redis_client):
    from tasks.spend import sync as sync_task
    from tasks.spend import window as window_task

    now = datetime.now(UTC)
    account("alice", ALICE, created=now - timedelta(hours=1))
    proxy.add_spend(ALICE, 0.05, now - timedelta(minutes=10))
    sync_task.apply()
    sent = [json.loads(base64.b64decode(json.loads(message)["body"]))[1]["event"]
            for message in redis_client.lrange("spend", 0, -1)]
    assert len(sent) >= 12 and usage() == (0, 0)  # an hour of windows, none read yet
    sync_task.apply()
    assert redis_client.llen("spend") == len(sent)  # sent once: not again while they wait
    for event in sent:
        window_task.apply(kwargs={"event": event})
    assert usage() == (1, Decimal("0.05")) and position() >= now.replace(microsecond=0) - SETTLE
    with session_scope() as session:
        run = session.get(SpendSyncRun, sent[0]["run_id"])  # the beat run that sent them counts their work
        assert run.inserted == 1 and run.rows_seen >= 1


def test_beat_sends_spend_sync_to_a_real_worker(workers, proxy):
    now = datetime.now(UTC)
    account("alice", ALICE, created=now - timedelta(hours=1))
    for minutes in (5, 7, 9):
        proxy.add_spend(ALICE, 0.05, now - timedelta(minutes=minutes))
    workers.start(queues="spend,periodic", beat=True,
                  env={"SPEND_SYNC_INTERVAL_S": "1", "RECONCILE_INTERVAL_S": "3600"})
    wait_for(lambda: usage()[0] == 3, 60, "three usage debits from the beat-driven sync")
    assert usage() == (3, Decimal("0.15"))
    wait_for(lambda: last_run().status == "ok", 10, "a finished run")
