"""A refund that names no user (Paystack's refund.processed) is its payment's user's."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from tasks.payment import payment, refund
from tasks.signup import signup
from worker.credits import ledger
from worker.db import session_scope
from worker.models import DeadLetter

USER = "ada@example.com"
SIGNUP = {"user_id": USER, "occurred_at": "2026-11-20T10:00:00Z"}
PAYMENT = {"provider": "paystack", "reference": "T100", "user_id": USER, "amount_minor": 500, "currency": "USD",
           "paid_at": "2026-11-20T11:00:00Z"}


def refund_of(payment_reference: str = "T100", **fields: Any) -> dict[str, Any]:
    return {"provider": "paystack", "refund_reference": "RF1", "payment_reference": payment_reference,
            "amount_minor": 500, "currency": "USD", "refunded_at": "2026-11-21T09:00:00Z", **fields}


def credited() -> object:
    with session_scope() as session:
        return ledger.balance(session, USER).credited_usd


def letters() -> list[DeadLetter]:
    with session_scope() as session:
        return list(session.execute(select(DeadLetter).order_by(DeadLetter.id)).scalars())


def test_a_refund_without_user_takes_back_its_payments_credit(proxy):
    signup.apply(kwargs={"event": SIGNUP})
    payment.apply(kwargs={"event": PAYMENT})
    assert credited() == 12
    refund.apply(kwargs={"event": refund_of()})
    refund.apply(kwargs={"event": refund_of()})  # a redelivery: once
    assert credited() == 2 and proxy.key_by_alias(f"test-{USER}")["max_budget"] == 2
    assert letters() == []


def test_a_refund_without_user_of_an_unknown_payment_is_dead_lettered_after_retries(proxy):
    signup.apply(kwargs={"event": SIGNUP})
    refund.apply(kwargs={"event": refund_of("nope")})
    (letter,) = letters()
    assert letter.task_name == "events.refund"
    assert letter.reason == "gave up after 13 attempts: refund of unknown payment 'nope'"


def test_a_refund_naming_another_user_than_the_payments_is_rejected(proxy):
    signup.apply(kwargs={"event": SIGNUP})
    payment.apply(kwargs={"event": PAYMENT})
    refund.apply(kwargs={"event": refund_of(user_id="mallory")})
    (letter,) = letters()
    assert "refund of unknown payment 'T100' for user 'mallory'" in letter.reason
    assert credited() == 12
