"""Rows the ledger cannot take, and a proxy that pages wrongly, never stop the spend sync.

Each poison row is set aside as a dead letter holding the row and the reason; the rest of its
page and window is stored and the cursor moves. An operator can replay a letter once its cause
is fixed (a raised SPEND_ROW_MAX_USD).
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

import worker.spend.rejects  # noqa: F401 - registers the replay of a set-aside row, as the CLI does
from tests.spend_helpers import ALICE, BASE, SETTLE, account, position, stored, usage
from worker.db import session_scope
from worker.delivery.replay import replay
from worker.models import DeadLetter
from worker.settings import get_settings
from worker.spend.sync import sync

NOW = BASE + timedelta(minutes=30)
POISON = {
    "nan": {"spend": float("nan")},
    "infinite": {"spend": float("inf")},
    "huge": {"spend": 1e12},
    "long-key": {"api_key": "k" * 129},
    "long-status": {"status": "x" * 33},
    "nul\x00id": {},
}


def letters() -> list[DeadLetter]:
    with session_scope() as session:
        return list(session.execute(select(DeadLetter).where(DeadLetter.task_name == "spend.row")
                                    .order_by(DeadLetter.id)).scalars())


def test_poison_rows_are_set_aside_and_the_rest_is_debited(proxy):
    account("alice", ALICE)
    for i in range(50):
        proxy.add_spend(ALICE, 0.01, BASE + timedelta(seconds=10 + i))
    for n, (name, fields) in enumerate(POISON.items()):
        row = proxy.add_spend(ALICE, 0.02, BASE + timedelta(seconds=20 + n), request_id=name)
        row.update(fields)  # the stored row itself, as the proxy will serve it

    run = sync(now=NOW)

    assert usage() == (50, Decimal("0.50"))
    assert stored() == 50 and run.counts.rejected == len(POISON)
    assert position() == NOW - SETTLE  # the cursor went past the poison
    found = {json.loads(letter.payload)["request_id"]: letter.reason for letter in letters()}
    assert set(found) == set(POISON)  # each letter holds its row's request_id, NUL and all
    assert "implausible spend" in found["huge"] and "SPEND_ROW_MAX_USD" in found["huge"]
    assert "finite number" in found["nan"] and "finite number" in found["infinite"]
    assert "api_key" in found["long-key"] and "status" in found["long-status"]

    again = sync(now=NOW + timedelta(minutes=10))  # verified: the set-aside rows count as accounted for
    assert (again.counts.inserted, again.counts.rejected) == (0, 0)
    assert len(letters()) == len(POISON)


def test_an_implausible_row_is_debited_by_replay_once_the_cap_is_raised(proxy, monkeypatch):
    account("alice", ALICE)
    proxy.add_spend(ALICE, 1500.0, BASE + timedelta(seconds=30), request_id="big-batch-job")
    sync(now=NOW)
    assert usage() == (0, 0)
    (letter,) = letters()
    assert "1500" in letter.reason

    monkeypatch.setenv("SPEND_ROW_MAX_USD", "5000")  # the operator checked: it was real
    get_settings.cache_clear()
    assert replay(letter.id) == "spend.row"
    assert usage() == (1, Decimal("1500"))
    assert replay_refused(letter.id)
    sync(now=NOW + timedelta(minutes=10))
    assert usage() == (1, Decimal("1500"))  # replayed and later verified: still one debit


def test_the_cap_cannot_be_raised_past_what_the_ledger_holds(monkeypatch, capsys):
    """A cap of 10^10 would let a row through that numeric(20, 10) cannot store, failing its page."""
    import pytest

    monkeypatch.setenv("SPEND_ROW_MAX_USD", "1e10")
    get_settings.cache_clear()
    with pytest.raises(SystemExit):
        get_settings()
    assert "SPEND_ROW_MAX_USD" in capsys.readouterr().err
    monkeypatch.delenv("SPEND_ROW_MAX_USD")
    get_settings.cache_clear()


def replay_refused(letter_id: int) -> bool:
    try:
        replay(letter_id)
    except ValueError:
        return True
    return False


def test_a_proxy_that_ignores_page_cannot_keep_a_run_paging(proxy, monkeypatch):
    monkeypatch.setenv("SPEND_PAGE_SIZE", "100")
    get_settings.cache_clear()
    account("alice", ALICE)
    for i in range(250):  # three pages a window, but the proxy serves page 1 each time
        proxy.add_spend(ALICE, 0.01, BASE + timedelta(seconds=i))
    proxy.ignore_page = True

    run = sync(now=NOW)

    windows = 30 * 60 // get_settings().spend_window_s
    # Per window: a read of total_pages pages, then at most three checks, each a count and a re-read.
    assert run.counts.pages <= windows * (1 + 3 * 4)
    assert position() == NOW - SETTLE  # the run ended; the short window waits for its next check
    assert 100 <= usage()[0] < 250

    proxy.ignore_page = False
    sync(now=NOW + timedelta(minutes=10))
    assert usage() == (250, Decimal("2.50"))
