"""The spend sync as a quiet neighbour: few requests on an idle proxy, ranges verified in one count,
split only where they differ, the readers paced, spend_logs kept for a bounded time.

The stand-in keeps the proxy's rules; times are explicit, nothing sleeps.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import text

from tests.conftest import TEST_ENV
from tests.spend_helpers import ALICE, STRANGER, account, stored, usage
from worker import proxy_db
from worker.db import session_scope
from worker.delivery.policy import is_transient
from worker.proxy import TransientProxyError
from worker.settings import get_settings
from worker.spend import fetch as spend_fetch
from worker.spend import retention
from worker.spend.direct import DirectSource
from worker.spend.sync import sync
from worker.spend.windows import Window

SPEND_LOGS = "/spend/logs/v2"


@pytest.fixture(autouse=True)
def _unpaced(monkeypatch):
    # The stand-in answers in a millisecond; the pacing itself is tested on its own below.
    monkeypatch.setattr("worker.spend.pace.REST", 0.0)


def _day_synced(proxy, hours: int = 24, now: datetime | None = None) -> datetime:
    """Alice's key with a row every 10 minutes for `hours`, all of it read; returns `now`."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    account("alice", ALICE, created=now - timedelta(hours=hours, minutes=5))
    for i in range(hours * 6):
        proxy.add_spend(ALICE, 0.01, now - timedelta(hours=hours) + timedelta(minutes=10 * i, seconds=7))
    sync(now=now)
    assert usage()[0] == hours * 6
    return now


def _requests_of(proxy, run) -> int:
    before = proxy.requests.get(SPEND_LOGS, 0)
    run()
    return proxy.requests.get(SPEND_LOGS, 0) - before


def _reads() -> dict[datetime, int]:
    with session_scope() as session:
        return dict(session.execute(text("SELECT start_time, reads FROM spend_windows")).all())


def test_an_idle_proxy_gets_a_few_requests_a_minute_over_a_full_day_of_windows(proxy):
    # Four and a half minutes into a window: of the phases tried (every 30 s of a window), the
    # one whose busiest minute has most requests, a window closing as every tier falls due.
    now = _day_synced(proxy, now=datetime(2026, 12, 7, 16, 4, 30, tzinfo=UTC))
    # Ten minutes of beat runs, one a minute, with nothing new: the 288 windows of the horizon
    # are verified by ranges (and the open window read), not a count each.
    per_minute = [_requests_of(proxy, lambda m=m: sync(now=now + timedelta(minutes=m))) for m in range(1, 11)]
    assert sum(per_minute) <= 40, per_minute  # the target is at most 5 a minute
    assert max(per_minute) <= 7, per_minute
    assert usage()[0] == 144  # nothing new, nothing debited twice


def test_a_row_filed_late_into_an_old_window_is_found_by_its_range_and_debited_once(proxy):
    now = _day_synced(proxy)
    late = proxy.add_spend(ALICE, 0.75, now - timedelta(hours=20, seconds=-31))  # 20 h old, filed now
    found_at = None
    for minute in range(1, 11):  # the beat, once a minute
        sync(now=now + timedelta(minutes=minute))
        if usage()[0] == 145:
            found_at = minute
            break
    assert found_at is not None and found_at <= 8, "the late row was not found within 8 minutes"
    for minute in range(found_at + 1, found_at + 10):  # later checks find the range whole again
        sync(now=now + timedelta(minutes=minute))
    assert usage() == (145, Decimal("2.19"))
    with session_scope() as session:
        assert session.execute(text("SELECT count(*) FROM ledger_entries WHERE idempotency_key = :k"),
                               {"k": f"spend:{late['request_id']}"}).scalar_one() == 1


def test_a_range_that_differs_is_halved_down_to_the_one_window_that_differs(proxy):
    now = _day_synced(proxy)
    sync(now=now + timedelta(minutes=8))  # every tier just verified
    before = _reads()
    hour = (now - timedelta(hours=13)).replace(minute=0, second=0)
    late = hour + timedelta(minutes=32, seconds=30)  # inside one window, on no boundary second
    proxy.add_spend(ALICE, 0.5, late)
    spent = _requests_of(proxy, lambda: sync(now=now + timedelta(minutes=16)))
    after = _reads()
    reread = [start for start, n in after.items() if n != before.get(start, 0)]
    # Only the window holding the late row was read again (besides the newest, read as usual).
    old_windows = [start for start in reread if start < now - timedelta(hours=1)]
    assert len(old_windows) == 1 and old_windows[0] <= late < old_windows[0] + timedelta(minutes=5)
    # The 240 windows of the oldest tier took about 2 log2(240) counts, not 240.
    assert spent <= 30, spent
    assert usage() == (145, Decimal("1.94"))


def test_with_the_proxy_database_no_spend_request_reaches_the_api(proxy, monkeypatch):
    """LITELLM_DATABASE_URL (here a "LiteLLM_SpendLogs" table of the proxy's shape in the test
    database): rows, counts and the verification of every window come from one grouped statement."""
    now = datetime.now(UTC).replace(microsecond=0)
    account("alice", ALICE, created=now - timedelta(hours=6))
    with session_scope() as session:
        session.execute(text('CREATE TABLE IF NOT EXISTS "LiteLLM_SpendLogs" (request_id text PRIMARY KEY, '
                             'api_key text, model text, model_group text, spend double precision, '
                             'prompt_tokens integer, completion_tokens integer, status text, '
                             '"startTime" timestamp(3))'))
        session.execute(text('TRUNCATE "LiteLLM_SpendLogs"'))
        for i in range(30):
            _proxy_row(session, f"r{i}", now - timedelta(hours=5) + timedelta(minutes=9 * i))
    monkeypatch.setenv("LITELLM_DATABASE_URL", TEST_ENV["DATABASE_URL"])
    get_settings.cache_clear()
    proxy_db.reset()
    try:
        sync(now=now)
        assert usage()[0] == 30
        with session_scope() as session:
            _proxy_row(session, "late", now - timedelta(hours=4, minutes=31))
        for minute in range(1, 10):
            sync(now=now + timedelta(minutes=minute))
        assert usage() == (31, Decimal("0.31"))
        assert proxy.requests.get(SPEND_LOGS, 0) == 0
    finally:
        proxy_db.reset()


def _proxy_row(session, request_id: str, start: datetime) -> None:
    from tests.standin.proxy import token

    session.execute(text('INSERT INTO "LiteLLM_SpendLogs" VALUES (:r, :k, \'fake-gpt\', \'fake-gpt\', 0.01, 3, 4, '
                         '\'success\', :t)'), {"r": request_id, "k": token(ALICE),
                                               "t": start.astimezone(UTC).replace(tzinfo=None)})


def test_a_proxy_database_outage_is_a_transient_fault_and_the_next_call_reconnects(monkeypatch):
    """Issue 20: a psycopg.OperationalError from the direct source dead-lettered spend.window."""
    monkeypatch.setenv("LITELLM_DATABASE_URL", TEST_ENV["DATABASE_URL"])
    get_settings.cache_clear()
    proxy_db.reset()
    window = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    with session_scope() as session:
        session.execute(text('CREATE TABLE IF NOT EXISTS "LiteLLM_SpendLogs" (request_id text PRIMARY KEY, '
                             '"startTime" timestamp(3))'))
    try:
        assert DirectSource().count(window) == 0
        pid = proxy_db.connection().info.backend_pid
        with psycopg.connect(TEST_ENV["DATABASE_URL"].replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))  # the proxy's database restarts
        with pytest.raises(TransientProxyError) as raised:
            DirectSource().count(window)
        assert is_transient(raised.value)  # the task policy retries it with backoff, no dead letter
        assert DirectSource().count(window) == 0  # and the retry finds the database back
    finally:
        proxy_db.reset()


def test_readers_together_keep_at_most_spend_api_concurrency_requests_in_flight(proxy, monkeypatch):
    proxy.delays[SPEND_LOGS] = 0.2
    window = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    for allowed in (1, 2):
        monkeypatch.setenv("SPEND_API_CONCURRENCY", str(allowed))
        get_settings.cache_clear()
        proxy.peak_in_flight.clear()
        readers = [threading.Thread(target=spend_fetch.fetch, args=(window, 1, 1)) for _ in range(4)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
        assert proxy.peak_in_flight[SPEND_LOGS] == allowed


def test_a_catch_up_asks_for_small_pages_and_keeps_every_row_it_fetched_when_the_proxy_fails(proxy, monkeypatch):
    # The proxy encodes a page in one stretch on the loop that serves its users' calls, so at the
    # default settings no request asks it for more than 5 rows; the pages are written in larger
    # batches, and a proxy failing mid-window loses none of the rows already fetched.
    now = datetime.now(UTC).replace(microsecond=0)
    start = datetime.fromtimestamp((now.timestamp() - 3600) // 300 * 300, UTC)
    account("alice", ALICE, created=start)
    for i in range(600):  # one window of 600 rows
        proxy.add_spend(ALICE, 0.01, start + timedelta(seconds=10 + i * 0.4))
    sizes, fetched = set(), set()
    real_fetch = spend_fetch.fetch

    def recording(window, number, size, api_key=None):
        page = real_fetch(window, number, size, api_key)
        sizes.add(size)
        if size > 1:  # not a count
            fetched.update(item.request_id for item in page.data)
        return page

    monkeypatch.setattr(spend_fetch, "fetch", recording)
    proxy.fail_after = 60  # part of the way into the window of 600 rows
    with pytest.raises(TransientProxyError):
        sync(now=now)
    assert sizes <= {1, get_settings().spend_page_size} and get_settings().spend_page_size == 5
    assert 0 < len(fetched) < 600 and stored() == len(fetched)

    proxy.mode = "ok"
    sync(now=now)
    assert stored() == 600 and usage() == (600, Decimal("6.00"))


def test_retention_deletes_only_rows_older_than_the_kept_days_and_never_counts_a_row_twice(proxy, monkeypatch):
    monkeypatch.setenv("SPEND_LOGS_KEEP_DAYS", "3")
    get_settings.cache_clear()
    now = datetime.now(UTC).replace(microsecond=0)
    account("alice", ALICE, created=now - timedelta(days=5))
    ages = [timedelta(days=4, hours=1), timedelta(days=3, hours=1), timedelta(days=2, hours=23), timedelta(hours=23),
            timedelta(hours=1)]
    rows = [proxy.add_spend(ALICE, 0.1, now - age) for age in ages]
    strangers = [proxy.add_spend(STRANGER, 0.1, now - age) for age in (ages[0], ages[2], timedelta(hours=23))]
    sync(now=now)  # five days of windows read, every row stored
    assert stored() == 8 and usage() == (5, Decimal("0.5"))
    daily = _daily()

    # Ours older than 3 days (two, and the stranger's among them), then the stranger's older than
    # the day of verification and its hour of margin; a row a batch.
    assert retention.delete_old(batch=1) == 4
    with session_scope() as session:
        kept = set(session.execute(text("SELECT request_id FROM spend_logs")).scalars())
    # every row of ours inside the horizon and its margin, a stranger's only while it can be verified
    assert kept == {r["request_id"] for r in rows[2:5]} | {strangers[2]["request_id"]}
    assert usage() == (5, Decimal("0.5")) and _daily() == daily  # the ledger and daily usage keep every day
    assert retention.delete_old() == 0

    sync(now=now, start=now - timedelta(days=5), end=now - timedelta(minutes=5))  # the old rows read again
    assert stored() == 4 and usage() == (5, Decimal("0.5")) and _daily() == daily


def _daily() -> list[tuple]:
    with session_scope() as session:
        return session.execute(text("SELECT day, requests, spend_usd FROM spend_daily ORDER BY day")).all()
