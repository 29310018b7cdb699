"""Late rows and parallel readers, with the default spend settings.

A row the proxy files up to SPEND_VERIFY_S (24 h) after its startTime is found by verification
within ten minutes; windows are read by several real workers at once and every row is debited
exactly once; a reader that died mid-read leaves nothing behind that its retry cannot finish.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text

from tests.fixtures import wait_for
from tests.spend_helpers import ALICE, BOB, account, position, stored, usage
from worker.db import session_scope
from worker.settings import get_settings
from worker.spend import plan
from worker.spend.fetch import ProxySource
from worker.spend.ingest import Counts
from worker.spend.read import update_window
from worker.spend.sync import sync


def test_a_row_filed_23_hours_late_is_debited_within_ten_minutes(proxy):
    now = datetime.now(UTC).replace(microsecond=0)
    account("alice", ALICE, created=now - timedelta(hours=25))
    proxy.add_spend(ALICE, 0.01, now - timedelta(hours=20))
    first = sync(now=now)
    assert usage() == (1, Decimal("0.01"))
    assert first.counts.rows_seen < 400  # a day of windows: read once, a count each to verify

    # The proxy's database was down for most of a day: the row reaches its log only now.
    proxy.add_spend(ALICE, 0.75, now - timedelta(hours=23))
    for minute in range(1, 11):  # a run every minute, as the beat would, for ten minutes
        sync(now=now + timedelta(minutes=minute))
        if usage()[0] == 2:
            break
    assert usage() == (2, Decimal("0.76")), "the late row was not debited within ten minutes"
    assert minute <= 10


def test_two_real_workers_read_windows_in_parallel_and_debit_each_row_once(workers, proxy):
    now = datetime.now(UTC).replace(microsecond=0)
    account("alice", ALICE, created=now - timedelta(hours=2))
    account("bob", BOB, created=now - timedelta(hours=2))
    rows = 3000
    for i in range(rows):
        proxy.add_spend(ALICE if i % 2 else BOB, 0.001, now - timedelta(hours=2) + timedelta(seconds=2.3 * i))
    settings = {"SPEND_WINDOW_S": "60", "SPEND_PAGE_SIZE": "100"}  # 120 windows to share
    workers.start(queues="spend", concurrency=2, env=settings)  # waiting before the first is sent
    workers.start(queues="spend,periodic", concurrency=2, beat=True,
                  env={**settings, "SPEND_SYNC_INTERVAL_S": "1", "RECONCILE_INTERVAL_S": "3600"})
    horizon = now - timedelta(seconds=get_settings().spend_settle_s)
    wait_for(lambda: stored() == rows and (position() or now - timedelta(days=1)) >= horizon, 180,
             "every row stored and the cursor at the settle time")
    assert usage() == (rows, Decimal("3.000"))
    read_by = [log.read_text(errors="replace").count("Task spend.window[") for log in workers.logs]
    assert all(read_by), f"windows read per worker: {read_by}"  # both took part


def test_a_retried_read_takes_back_the_window_its_crashed_attempt_held(proxy):
    now = datetime.now(UTC).replace(microsecond=0)
    account("alice", ALICE, created=now - timedelta(hours=1))
    proxy.add_spend(ALICE, 0.02, now - timedelta(minutes=30))
    sync(now=now - timedelta(minutes=40))  # plans the windows; none holds a row yet
    with session_scope() as session:
        plan.extend(session, now - timedelta(hours=1), now - timedelta(minutes=2))
        start = session.execute(text("SELECT start_time FROM spend_windows WHERE start_time <= :t "
                                     "ORDER BY start_time DESC LIMIT 1"), {"t": now - timedelta(minutes=30)}
                                ).scalar_one()
        assert plan.claim(session, start, "message-1")  # the first attempt holds it, then dies
    assert not update_window(ProxySource(), start, now, Counts(), "another-message")  # held: left alone
    assert update_window(ProxySource(), start, now, Counts(), "message-1")  # its retry: at once
    assert usage() == (1, Decimal("0.02"))
