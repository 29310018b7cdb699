"""Expiring promotional credit: the unspent part of a grant leaves at its expiry, once the spend
sync has read past it; spend burns the soonest-expiring grant first; refunds and top-ups after."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from tasks.credit_tools import redeem
from tasks.expiry import expire_credit
from tasks.payment import payment, refund
from tasks.signup import signup
from worker.cli.main import app
from worker.credits import ledger
from worker.credits.expiry import expire_alone, expire_due
from worker.db import session_scope
from worker.models import LedgerEntry
from worker.settings import get_settings

USER = "erin@example.com"
ALIAS = f"test-{USER}"
T0 = datetime(2026, 11, 1, 10, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def expiring_signup(monkeypatch, proxy):
    """A signup at T0 whose 2 USD grant expires a day later."""
    monkeypatch.setenv("SIGNUP_CREDIT_EXPIRES_DAYS", "1")
    get_settings.cache_clear()
    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": T0.isoformat()}})


def spend(amount: str, at: datetime, request_id: str) -> None:
    with session_scope() as session:
        ledger.record(session, user_id=USER, kind="usage", idempotency_key=f"spend:{request_id}",
                      spent=Decimal(amount), occurred_at=at)


def sync_cursor(at: datetime) -> None:
    """Where the spend sync has read to without a gap (what worker.spend moves)."""
    with session_scope() as session:
        session.execute(text("INSERT INTO spend_sync_cursor (position, origin) VALUES (:p, :p) "
                             "ON CONFLICT (id) DO UPDATE SET position = :p"), {"p": at})


def pay(reference: str, at: datetime) -> None:
    payment.apply(kwargs={"event": {"reference": reference, "user_id": USER, "amount_minor": 500,
                                    "currency": "USD", "paid_at": at.isoformat()}})


def figures() -> tuple[Decimal, Decimal, Decimal, Decimal]:
    with session_scope() as session:
        b = ledger.balance(session, USER)
    return b.credited_usd, b.spent_usd, b.remaining_usd, b.savings_usd


def expiries() -> dict[str, Decimal]:
    with session_scope() as session:
        rows = session.execute(select(LedgerEntry).where(LedgerEntry.kind == "expiry")).scalars()
        return {e.idempotency_key: e.credit_usd for e in rows}


def budget(proxy) -> float:
    return proxy.key_by_alias(ALIAS)["max_budget"]


def test_unspent_signup_credit_leaves_once_the_sync_has_read_past_its_expiry(expiring_signup, proxy):
    pay("p1", T0 + timedelta(hours=1))
    spend("0.5", T0 + timedelta(hours=2), "a")
    sync_cursor(T0 + DAY - timedelta(seconds=1))
    assert expire_due().expired == {} and budget(proxy) == 12
    sync_cursor(T0 + DAY)
    assert expire_due().expired == {"signup:" + USER: Decimal("1.5")}
    assert expiries() == {"expiry:signup:" + USER: Decimal("-1.5")}
    assert figures() == (Decimal("10.5"), Decimal("0.5"), Decimal(10), Decimal("0.5"))
    assert budget(proxy) == 10.5
    # Later spend burns the payment (half of it saved, at multiplier 2), never the dead grant.
    spend("3", T0 + DAY + timedelta(hours=1), "b")
    assert figures() == (Decimal("10.5"), Decimal("3.5"), Decimal(7), Decimal("2.0"))
    sync_cursor(T0 + 3 * DAY)
    expire_credit.apply()  # the beat's task: nothing is left to expire
    assert len(expiries()) == 1 and budget(proxy) == 10.5


def test_spend_burns_the_grant_that_expires_soonest_first(proxy):
    # Redemptions are dated by the worker's clock: this account's history is laid out from now.
    now = datetime.now(UTC)
    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": now.isoformat()}})  # never expires
    runner = CliRunner()
    codes = {}
    for days in (10, 3):
        out = runner.invoke(app, ["codes", "create", "--amount-usd", "5", "--credit-expires-days", str(days),
                                  "--json"])
        codes[days] = json.loads(out.stdout)[0]["code"]
        redeem.apply(kwargs={"event": {"user_id": USER, "code": codes[days], "redeemed_at": now.isoformat()}})
    spend("6", now + DAY, "a")  # 5 from the 3-day code, 1 from the 10-day one, none from the signup
    sync_cursor(now + 4 * DAY)
    expire_due()
    with session_scope() as session:
        (three_day,) = session.execute(text("SELECT idempotency_key FROM ledger_entries WHERE kind = 'promo' "
                                            "AND expires_at < :t"), {"t": now + 4 * DAY}).scalars().all()
    assert expiries() == {f"expiry:{three_day}": Decimal(0)}  # settled, nothing left
    sync_cursor(now + 11 * DAY)
    expire_due()
    assert sorted(expiries().values()) == [Decimal(-4), Decimal(0)]
    assert figures() == (Decimal(8), Decimal(6), Decimal(2), Decimal(6))  # all free credit: all saved
    assert budget(proxy) == 8


def test_spend_racing_the_expiry(expiring_signup, proxy):
    expires = T0 + DAY
    sync_cursor(expires - timedelta(minutes=5))
    spend("0.25", expires - timedelta(seconds=1), "before")  # filed late, but before the cursor passes
    spend("0.5", expires, "at")  # at the very instant of expiry: the grant is dead already
    sync_cursor(expires + timedelta(minutes=5))
    # Two runs at once (the beat's and an operator's) settle the grant once.
    start = threading.Barrier(2)
    results = []

    def run() -> None:
        start.wait()
        results.append(expire_alone())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert expiries() == {"expiry:signup:" + USER: Decimal("-1.75")}
    assert len(results) == 2 and any(r is not None for r in results)  # None: skipped, the other held the lock
    credited, spent, remaining, savings = figures()
    assert (credited, spent, remaining) == (Decimal("0.25"), Decimal("0.75"), Decimal("-0.5"))
    assert budget(proxy) == 0.25  # the proxy refuses the next call
    # A row of before the expiry filed only now, after the expiry was settled: it burns the grant
    # it would have burned on time, and the expiry gives that much back.
    spend("0.1", expires - timedelta(hours=1), "very-late")
    expire_due()
    assert expiries() == {"expiry:signup:" + USER: Decimal("-1.75"),
                          f"expiry:signup:{USER}:late:1": Decimal("0.1")}
    assert figures()[:3] == (Decimal("0.35"), Decimal("0.85"), Decimal("-0.5"))


def test_spend_filed_after_the_expiry_was_settled_burns_the_expired_grant(expiring_signup, proxy):
    """Issue 20, 3: a row dated before the expiry that arrives after it was settled (a long
    streaming call, the proxy's batch write) is debited against the expiring grant, not against
    paid credit: the user ends up with what they would have had if it had come on time."""
    from worker.credits.audit import audit_all

    pay("p1", T0 + timedelta(hours=1))
    spend("0.5", T0 + timedelta(hours=2), "a")
    sync_cursor(T0 + DAY + timedelta(minutes=3))
    assert expire_due().expired == {"signup:" + USER: Decimal("1.5")}
    assert figures()[2] == Decimal(10) and budget(proxy) == 10.5
    # Three minutes after the expiry, a call that started an hour before it is filed: 3 USD, more
    # than was left of the signup grant (1.5 of it burns that, the rest the payment).
    spend("3", T0 + DAY - timedelta(hours=1), "late")
    report = expire_due()
    assert report.given_back == {"signup:" + USER: Decimal("1.5")}
    credited, spent, remaining, savings = figures()
    # On time: the signup grant's 2 all spent, 1.5 of the payment; nothing would have expired.
    assert (credited, spent, remaining) == (Decimal(12), Decimal("3.5"), Decimal("8.5"))
    assert savings == Decimal("2") + Decimal("1.5") / 2
    assert budget(proxy) == 12
    # Found again (the watermark lags by minutes): written once.
    assert expire_due().given_back == {}
    assert len(expiries()) == 2 and not audit_all().mismatches


def test_refund_after_an_expiry(expiring_signup, proxy):
    pay("p1", T0 + timedelta(hours=1))
    spend("3", T0 + timedelta(hours=2), "a")  # 2 from the signup grant, then 1 from the payment
    sync_cursor(T0 + 2 * DAY)
    expire_due()
    assert expiries() == {"expiry:signup:" + USER: Decimal(0)}
    refund.apply(kwargs={"event": {"refund_reference": "r1", "payment_reference": "p1", "user_id": USER,
                                   "amount_minor": 500, "currency": "USD",
                                   "refunded_at": (T0 + 2 * DAY).isoformat()}})
    # The refunded payment's spent dollar now rests on no grant: remaining goes negative.
    assert figures() == (Decimal(2), Decimal(3), Decimal(-1), Decimal(2))
    assert budget(proxy) == 2


def test_top_up_after_an_expiry(expiring_signup, proxy):
    spend("0.5", T0 + timedelta(hours=2), "a")
    sync_cursor(T0 + DAY)
    expire_due()
    assert figures() == (Decimal("0.5"), Decimal("0.5"), Decimal(0), Decimal("0.5")) and budget(proxy) == 0.5
    pay("p1", T0 + 2 * DAY)
    spend("4", T0 + 2 * DAY + timedelta(hours=1), "b")
    assert figures() == (Decimal("10.5"), Decimal("4.5"), Decimal(6), Decimal("2.5"))
    assert budget(proxy) == 10.5
    sync_cursor(T0 + 10 * DAY)
    expire_due()  # payments never expire
    assert len(expiries()) == 1 and budget(proxy) == 10.5


def test_unset_expiry_never_expires(proxy):
    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": T0.isoformat()}})
    sync_cursor(T0 + 1000 * DAY)
    assert expire_due().expired == {} and budget(proxy) == 2


def test_a_late_grant_that_expired_before_the_last_run_is_still_settled(expiring_signup, proxy, monkeypatch):
    """Each run looks only at grants expiring, or written, since the last one; a signup that
    arrives late, with a grant that expired before that run, is among those written since."""
    from worker.credits import expiry_cursor

    monkeypatch.setattr(expiry_cursor, "LAG", "0 seconds")  # no transaction is in flight here
    sync_cursor(T0 + 5 * DAY)
    assert expire_due().expired == {"signup:" + USER: Decimal(2)}
    with session_scope() as session:
        assert session.execute(text("SELECT grants_after_entry_id > 0 AND settled_until = :u FROM expiry_cursor"),
                               {"u": T0 + 5 * DAY}).scalar()
    signup.apply(kwargs={"event": {"user_id": "late", "occurred_at": (T0 + timedelta(hours=1)).isoformat()}})
    assert expire_due().expired == {"signup:late": Decimal(2)}
