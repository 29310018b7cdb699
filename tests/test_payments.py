"""Payments and refunds: one credit per payment whatever the delivery, refunds once, rejects kept."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, text

from tasks.payment import payment, refund
from tasks.signup import signup
from tests.fixtures import wait_for
from worker import signing
from worker.credits import ledger
from worker.credits.accounts import sync_key
from worker.db import session_scope
from worker.delivery.replay import replay
from worker.models import Account, DeadLetter, LedgerEntry
from worker.producer import publish_payment
from worker.settings import get_settings

USER = "bob@example.com"
ALIAS = f"test-{USER}"
SIGNUP = {"user_id": USER, "email": USER, "occurred_at": "2026-11-20T10:00:00Z"}


def pay(reference: str = "pay-1", amount_minor: int = 500, **fields: Any) -> dict[str, Any]:
    return {"provider": "paystack", "reference": reference, "user_id": USER, "amount_minor": amount_minor,
            "currency": "USD", "paid_at": "2026-11-20T11:00:00Z", **fields}


def refund_of(reference: str, payment_reference: str = "pay-1", amount_minor: int = 500) -> dict[str, Any]:
    return {"provider": "paystack", "refund_reference": reference, "payment_reference": payment_reference,
            "user_id": USER, "amount_minor": amount_minor, "currency": "USD",
            "refunded_at": "2026-11-21T09:00:00Z"}


def budget(proxy) -> float | None:
    key = proxy.key_by_alias(ALIAS)
    return key["max_budget"] if key else None


def balance() -> ledger.Balance:
    with session_scope() as session:
        return ledger.balance(session, USER)


def account() -> Account | None:
    with session_scope() as session:
        return session.get(Account, USER)


def entries(kind: str) -> list[LedgerEntry]:
    with session_scope() as session:
        return list(session.execute(select(LedgerEntry).where(LedgerEntry.kind == kind)).scalars())


def letters() -> list[DeadLetter]:
    with session_scope() as session:
        return list(session.execute(select(DeadLetter).order_by(DeadLetter.id)).scalars())


def succeeded(workers, task_ids: list[str]) -> bool:
    out = workers.output()
    return all(f"[{task_id}] succeeded" in out for task_id in task_ids)


# -- duplicates ----------------------------------------------------------------------------

def test_same_payment_three_times_sequentially_credits_once(proxy):
    signup.apply(kwargs={"event": SIGNUP})
    for _ in range(3):
        payment.apply(kwargs={"event": pay()})
    assert len(entries("payment")) == 1
    assert budget(proxy) == 12
    b = balance()
    assert (b.credited_usd, b.paid_usd, b.budget_pushed_usd) == (Decimal(12), Decimal(5), Decimal(12))
    assert not letters()


def test_same_payment_three_times_concurrently_in_threads_credits_once(proxy):
    signup.apply(kwargs={"event": SIGNUP})
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: payment.apply(kwargs={"event": pay()}), range(3)))
    assert len(entries("payment")) == 1 and budget(proxy) == 12 and not letters()


def test_same_payment_three_times_on_two_worker_processes_credits_once(workers, proxy):
    signup.apply(kwargs={"event": SIGNUP})
    workers.start()
    workers.start()
    ids = [publish_payment(pay()) for _ in range(3)]
    wait_for(lambda: succeeded(workers, ids), 60, "all three deliveries to be handled")
    assert len(entries("payment")) == 1 and budget(proxy) == 12 and not letters()


def test_fifty_payments_on_two_worker_processes_all_reach_the_proxy(workers, proxy):
    signup.apply(kwargs={"event": SIGNUP})
    # Small batches hold few messages each, so both processes get some and their pushes race.
    workers.start(env={"EVENT_BATCH_SIZE": "2"})
    workers.start(env={"EVENT_BATCH_SIZE": "2"})
    ids = [publish_payment(pay(f"pay-{n}")) for n in range(50)]
    wait_for(lambda: succeeded(workers, ids), 120, "fifty payments to be handled")
    assert budget(proxy) == 2 + 50 * 10
    assert balance().budget_pushed_usd == Decimal(502) and len(entries("payment")) == 50
    # Both processes took part, so the pushes really raced each other.
    assert all(" succeeded in " in log.read_text() for log in workers.logs)


def test_payment_reference_of_another_user_is_rejected(proxy):
    payment.apply(kwargs={"event": pay()})
    payment.apply(kwargs={"event": pay(user_id="mallory")})
    assert [d.reason for d in letters()] == ["payment reference 'pay-1' was already credited to another user"]
    with session_scope() as session:
        assert session.get(Account, "mallory") is None


def test_payment_reference_reused_with_another_amount_is_dead_lettered_naming_both(proxy):
    """Issue 20, 6: acknowledged as a duplicate, the second payment's money was never credited."""
    payment.apply(kwargs={"event": pay()})
    payment.apply(kwargs={"event": {**pay(), "amount_minor": 1500}})
    payment.apply(kwargs={"event": pay()})  # the same payment again: a duplicate, done
    assert [d.reason for d in letters()] == [
        "payment reference 'pay-1' was already credited for 5.00 USD; this event says 15.00 USD"]
    assert len(entries("payment")) == 1


def test_two_users_racing_on_one_reference_credit_one_and_reject_the_other(proxy):
    def race(n: int) -> None:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda user: payment.apply(kwargs={"event": pay(f"pay-{n}", user_id=user)}),
                          [USER, "mallory"]))

    for n in range(5):
        race(n)
    assert len(entries("payment")) == 5
    assert [d.reason for d in letters()] == [
        f"payment reference 'pay-{n}' was already credited to another user" for n in range(5)
    ]


# -- ordering and balances -----------------------------------------------------------------

def test_payment_before_signup_creates_account_then_signup_makes_the_key_once(proxy):
    """The payment makes the account and its credit, but no key: the signup makes it, at the
    total that already holds the payment, so the key is written once."""
    payment.apply(kwargs={"event": pay()})
    assert account().key_status == "pending" and not proxy.keys
    signup.apply(kwargs={"event": SIGNUP})
    signup.apply(kwargs={"event": SIGNUP})
    assert budget(proxy) == 12 and len(proxy.keys) == 1
    assert proxy.requests == {"/key/generate": 1}
    assert len(entries("grant")) == 1 and account().email == USER


def test_payment_whose_signup_never_comes_gets_its_key_from_reconcile(proxy):
    from worker.credits.reconcile import reconcile

    payment.apply(kwargs={"event": pay()})
    assert account().key_status == "pending"
    report = reconcile(fix=True)
    assert report.pending == [USER] and report.fixed == 1 and budget(proxy) == 10


def test_savings_example_from_the_issue(proxy):
    signup.apply(kwargs={"event": SIGNUP})
    payment.apply(kwargs={"event": pay()})
    with session_scope() as session:
        ledger.record(session, user_id=USER, kind="usage", idempotency_key="usage:1", spent=Decimal(3),
                      occurred_at=datetime(2026, 11, 20, 12, tzinfo=UTC))
    b = balance()
    assert (b.credited_usd, b.spent_usd, b.remaining_usd, b.savings_usd) == (12, 3, 9, Decimal("2.5"))


# -- refunds -------------------------------------------------------------------------------

def test_full_refund_takes_back_the_credit_and_lowers_the_budget(proxy):
    signup.apply(kwargs={"event": SIGNUP})
    payment.apply(kwargs={"event": pay()})
    refund.apply(kwargs={"event": refund_of("rf-1")})
    b = balance()
    assert (b.credited_usd, b.paid_usd, b.budget_pushed_usd) == (Decimal(2), Decimal(0), Decimal(2))
    assert budget(proxy) == 2 and not letters()


def test_a_push_that_waited_for_the_account_lock_reads_the_total_after_it(proxy):
    """A sync_key blocked behind a refund's transaction must not push the total from before it.

    The interleaving the chaos suite hit: a payment's push starts and waits for the account
    row, which a refund holds; the refund commits and another push records the lower total;
    the waiting push must then see that total, not the one from when its statement began."""
    signup.apply(kwargs={"event": SIGNUP})
    payment.apply(kwargs={"event": pay()})
    assert budget(proxy) == 12
    # The pool outermost: if the test fails, the holder rolls back before the pool waits for sync_key.
    with ThreadPoolExecutor(1) as pool, session_scope() as holder:
        holder.execute(select(Account).where(Account.user_id == USER).with_for_update())
        waiting = pool.submit(sync_key, USER)
        wait_for(_waiting_for_a_lock, 10, "sync_key to wait for the account row")
        ledger.record(holder, user_id=USER, kind="refund", idempotency_key="refund:paystack:rf-x",
                      grant_key="payment:paystack:pay-1", credit=Decimal(-10), paid=Decimal(-5),
                      occurred_at=datetime.now(UTC))
        holder.get(Account, USER).budget_pushed_usd = Decimal(2)  # the refund's own push, done
        proxy.key_by_alias(ALIAS)["max_budget"] = 2.0
        holder.commit()
        assert waiting.result(timeout=30) == Decimal(2)
    assert budget(proxy) == 2 and balance().credited_usd == 2


def _waiting_for_a_lock() -> bool:
    # Its own transaction each time: pg_stat_activity is read once per transaction.
    with session_scope() as session:
        return bool(session.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )).scalar())


def test_partial_refunds_take_their_share_and_the_last_leaves_nothing(proxy):
    signup.apply(kwargs={"event": SIGNUP})
    payment.apply(kwargs={"event": pay("pay-1", 1500)})  # paid 15, credit 30
    refund.apply(kwargs={"event": refund_of("rf-1", amount_minor=400)})  # 4/15 of 30 = 8
    b = balance()
    assert (b.credited_usd, b.paid_usd) == (Decimal(24), Decimal(11)) and budget(proxy) == 24
    refund.apply(kwargs={"event": refund_of("rf-2", amount_minor=1100)})
    b = balance()
    assert (b.credited_usd, b.paid_usd) == (Decimal(2), Decimal(0)) and budget(proxy) == 2
    assert not letters()


def test_partial_refunds_with_rounded_shares_leave_no_dust(proxy, monkeypatch):
    # Credit 15 x 0.6666666666666 is stored as 10.0000000000; shares of 1/15 and 12/15 of it,
    # each rounded to 1e-10, add up to 1e-10 more than that: the last refund must take what is left.
    monkeypatch.setenv("CREDIT_MULTIPLIER", "0.6666666666666")
    get_settings.cache_clear()
    payment.apply(kwargs={"event": pay("pay-1", 1500)})
    for n in range(3):
        refund.apply(kwargs={"event": refund_of(f"rf-{n}", amount_minor=100)})
    refund.apply(kwargs={"event": refund_of("rf-last", amount_minor=1200)})
    assert balance().credited_usd == 0 and balance().paid_usd == 0 and not letters()


def test_the_same_refund_twice_sequentially_and_concurrently_applies_once(proxy):
    signup.apply(kwargs={"event": SIGNUP})
    payment.apply(kwargs={"event": pay()})
    refund.apply(kwargs={"event": refund_of("rf-1")})
    refund.apply(kwargs={"event": refund_of("rf-1")})
    payment.apply(kwargs={"event": pay("pay-2")})
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: refund.apply(kwargs={"event": refund_of("rf-2", "pay-2")}), range(3)))
    assert len(entries("refund")) == 2 and balance().credited_usd == 2 and budget(proxy) == 2
    assert not letters()


def test_refund_of_unknown_payment_is_dead_lettered(proxy):
    signup.apply(kwargs={"event": SIGNUP})
    refund.apply(kwargs={"event": refund_of("rf-1", "nope")})
    (letter,) = letters()
    assert letter.task_name == "events.refund"
    # Retried first (its payment may be on the way: see tests/chaos), then dead-lettered.
    assert letter.reason == f"gave up after 13 attempts: refund of unknown payment 'nope' for user '{USER}'"
    assert balance().credited_usd == 2 and not entries("refund")


def test_refund_exceeding_what_is_left_is_dead_lettered(proxy):
    signup.apply(kwargs={"event": SIGNUP})
    payment.apply(kwargs={"event": pay()})
    refund.apply(kwargs={"event": refund_of("rf-1", amount_minor=300)})
    refund.apply(kwargs={"event": refund_of("rf-2", amount_minor=300)})
    (letter,) = letters()
    assert letter.reason == "refund of 3.00 USD exceeds the 2.00 left to refund on payment 'pay-1'"
    assert balance().credited_usd == 6 and budget(proxy) == 6  # 12 less 3/5 of 10


# -- rejected payments ---------------------------------------------------------------------

BAD = {"reference": None, "user_id": None, "amount_minor": None, "currency": None, "paid_at": None}


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (pay(amount_minor=700), "7.00 USD matches no plan: 5.00, 15.00, 20.00"),
        (pay(currency="EUR"), "5.00 EUR is not in the plan currency USD"),
        (pay(amount_minor=0), "amount_minor: Input should be greater than 0"),
        (pay(amount_minor=-500), "amount_minor: Input should be greater than 0"),
        *[({k: v for k, v in pay().items() if k != field}, f"{field}: Field required") for field in BAD],
        (pay(bonus=1), "bonus: Extra inputs are not permitted"),
    ],
)
def test_bad_payment_is_dead_lettered_with_its_reason(proxy, event, reason):
    payment.apply(kwargs={"event": event})
    (letter,) = letters()
    assert (letter.task_name, letter.reason, letter.status) == ("events.payment", reason, "open")
    assert not entries("payment") and not proxy.keys


@pytest.fixture
def signing_secret(monkeypatch):
    monkeypatch.setenv("EVENT_SIGNING_SECRET", "whsec-test-0123456789abcdef0123456789")
    get_settings.cache_clear()
    yield "whsec-test-0123456789abcdef0123456789"
    monkeypatch.delenv("EVENT_SIGNING_SECRET")
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "missing signature (EVENT_SIGNING_SECRET is set, so payments, refunds, adjustments and "
               "redemptions must be signed)"),
        ("0" * 64, "bad signature: the HMAC-SHA256 of the event's canonical JSON does not match"),
        ("other", "bad signature: the HMAC-SHA256 of the event's canonical JSON does not match"),
    ],
)
def test_unsigned_or_badly_signed_payment_is_dead_lettered(proxy, signing_secret, signature, reason):
    event = pay() if signature is None else pay(signature=signature)
    if signature == "other":  # signed with the wrong secret
        event = pay(signature=signing.sign(pay(), "not-the-secret"))
    payment.apply(kwargs={"event": event})
    assert [d.reason for d in letters()] == [reason] and not entries("payment")


def test_signed_payment_and_refund_are_applied(proxy, signing_secret):
    signup.apply(kwargs={"event": {**SIGNUP, "signature": signing.sign(SIGNUP, signing_secret)}})
    payment.apply(kwargs={"event": pay(signature=signing.sign(pay(), signing_secret))})
    # A signature does not survive a change to the event it signed.
    tampered = {**pay(signature=signing.sign(pay(), signing_secret)), "amount_minor": 1500}
    payment.apply(kwargs={"event": tampered})
    event = refund_of("rf-1", amount_minor=100)
    refund.apply(kwargs={"event": {**event, "signature": signing.sign(event, signing_secret)}})
    assert budget(proxy) == 10 and [d.reason[:13] for d in letters()] == ["bad signature"]


def test_dead_lettered_payment_is_replayed_after_the_cause_is_fixed(workers, proxy):
    signup.apply(kwargs={"event": SIGNUP})
    payment.apply(kwargs={"event": pay(amount_minor=700)})
    (letter,) = letters()
    workers.start(env={"PAYMENT_PLANS": "5,7,15,20"})
    assert replay(letter.id) == "events.payment"
    wait_for(lambda: budget(proxy) == 16, 30, "the replayed payment on the proxy")
    assert [d.status for d in letters()] == ["replayed"] and len(entries("payment")) == 1
    with pytest.raises(ValueError, match="already replayed"):
        replay(letter.id)


# -- proxy outages -------------------------------------------------------------------------

@pytest.mark.parametrize("outage", ["error", "stopped"])
def test_payment_during_proxy_outage_is_credited_at_once_and_pushed_later(workers, proxy, outage):
    signup.apply(kwargs={"event": SIGNUP})
    if outage == "error":
        proxy.mode = "error"
    else:
        proxy.stop()
    workers.start()
    publish_payment(pay())
    wait_for(lambda: entries("payment") and account().push_error, 30, "the credit and the push error")
    assert balance().credited_usd == 12 and account().budget_pushed_usd == 2 and budget(proxy) == 2
    if outage == "error":
        proxy.mode = "ok"
    else:
        proxy.start()
    wait_for(lambda: budget(proxy) == 12, 60, "the retried push")
    wait_for(lambda: account().push_error is None, 10, "the push recorded")
    assert account().budget_pushed_usd == 12 and not letters()
    assert "transient failure, retry" in workers.output()


def test_no_event_is_applied_unsigned_unless_that_is_asked_for(monkeypatch, proxy):
    """Start-up refuses to run without EVENT_SIGNING_SECRET; should a process run anyway (a task
    applied through Flower's API by a process started otherwise), the event is still refused."""
    from worker.settings import get_settings

    monkeypatch.setenv("ALLOW_UNSIGNED_EVENTS", "false")
    get_settings.cache_clear()
    payment.apply(kwargs={"event": pay()})
    assert [d.reason for d in letters()] == [
        "EVENT_SIGNING_SECRET is not set and ALLOW_UNSIGNED_EVENTS is not true: no event is applied unsigned"]
    assert not entries("payment")
