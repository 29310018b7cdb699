"""Payments applied a batch at a time: each event keeps its own outcome, pushes are coalesced."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from tasks.payment import payment
from tasks.signup import signup
from tests.test_payments import entries, letters, pay
from worker.credits.payment_batch import apply_payment_batch
from worker.db import session_scope
from worker.errors import Rejected
from worker.models import Account
from worker.proxy import PermanentProxyError, TransientProxyError

USERS = ["ann@example.com", "ben@example.com"]


def _signups() -> None:
    for user in USERS:
        signup.apply(kwargs={"event": {"user_id": user, "email": user, "occurred_at": "2026-11-20T10:00:00Z"}})


def budgets(proxy) -> list[float | None]:
    return [(proxy.key_by_alias(f"test-{user}") or {}).get("max_budget") for user in USERS]


def pushed() -> dict[str, Decimal | None]:
    with session_scope() as session:
        return {a.user_id: a.budget_pushed_usd for a in session.execute(select(Account)).scalars()}


def test_one_batch_credits_each_payment_once_and_pushes_each_key_once(proxy):
    _signups()
    proxy.requests.clear()
    events: list[Any] = [
        pay("a-1", user_id=USERS[0]), pay("a-2", 1500, user_id=USERS[0]), pay("b-1", user_id=USERS[1]),
        pay("a-1", user_id=USERS[0]),            # the same payment again, in the same batch
        pay("b-1", user_id="mallory"),           # someone else's reference
        pay("x-1", 700, user_id=USERS[1]),       # no such plan
        {"reference": "x-2", "user_id": USERS[1]},  # malformed
    ]
    outcomes = apply_payment_batch(events)
    assert outcomes[:4] == [None] * 4
    assert isinstance(outcomes[4], Rejected) and "already credited to another user" in str(outcomes[4])
    assert "7.00 USD matches no plan" in str(outcomes[5])
    assert "amount_minor" in str(outcomes[6])
    assert sorted(e.idempotency_key for e in entries("payment")) == [
        "payment:paystack:a-1", "payment:paystack:a-2", "payment:paystack:b-1"]
    assert budgets(proxy) == [2 + 10 + 30, 2 + 10]
    # Both keys changed: one request for the two of them, and no account made for the refused payer.
    assert proxy.requests == {"/key/bulk_update": 1}
    assert pushed() == {USERS[0]: Decimal(42), USERS[1]: Decimal(12)}


def test_a_failed_push_keeps_the_credit_and_the_retry_pushes_it(proxy):
    _signups()
    batch = [pay("a-1", user_id=USERS[0]), pay("b-1", user_id=USERS[1])]
    proxy.mode = "error"
    outcomes = apply_payment_batch(batch)
    assert all(isinstance(o, TransientProxyError) for o in outcomes)
    assert len(entries("payment")) == 2 and budgets(proxy) == [2, 2]
    with session_scope() as session:
        assert all(a.push_error for a in session.execute(select(Account)).scalars())
    proxy.mode = "ok"
    assert apply_payment_batch(batch) == [None, None]
    assert len(entries("payment")) == 2 and budgets(proxy) == [12, 12]
    assert pushed() == {USERS[0]: Decimal(12), USERS[1]: Decimal(12)}


@pytest.mark.parametrize("unknown_key_costs_s", [0.0, 3.0], ids=["answered", "past-the-timeout"])
def test_a_key_the_proxy_refuses_fails_only_its_own_payments(proxy, unknown_key_costs_s):
    """The real proxy can take seconds over an unknown key in a bulk update; past the client's
    timeout (2 s in tests) the keys go one by one, with the same outcome."""
    _signups()
    with session_scope() as session:
        gone = session.get(Account, USERS[1]).key_hash
    with proxy.lock:
        del proxy.keys[gone]  # deleted on the proxy by hand
    proxy.bulk_unknown_s = unknown_key_costs_s
    outcomes = apply_payment_batch([pay("a-1", user_id=USERS[0]), pay("b-1", user_id=USERS[1])])
    assert outcomes[0] is None and isinstance(outcomes[1], PermanentProxyError)
    assert "Key not found" in str(outcomes[1])
    assert budgets(proxy)[0] == 12 and len(entries("payment")) == 2
    assert pushed()[USERS[0]] == Decimal(12)


def test_each_message_of_a_batch_is_settled_on_its_own(proxy, redis_client):
    """What the worker's pool process does with a batch: good ones done, bad input dead-lettered
    with its reason, a transient failure sent again with its retry count and a countdown."""
    _signups()
    items = [
        ("t-ok", [], {"event": pay("a-1", user_id=USERS[0])}, 0),
        ("t-plan", [], {"event": pay("x-1", 700, user_id=USERS[0])}, 0),
        ("t-shape", ["positional"], {}, 0),
    ]
    assert payment.run_batch(items) == []
    assert sorted(d.reason for d in letters()) == [
        "7.00 USD matches no plan: 5.00, 15.00, 20.00",
        "the task takes exactly one keyword argument, event; got 1 positional and []",
    ]
    assert budgets(proxy)[0] == 12
    proxy.mode = "error"
    assert payment.run_batch([("t-later", [], {"event": pay("b-1", user_id=USERS[1])}, 3)]) == []
    again = [json.loads(m) for m in redis_client.lrange("payments", 0, -1)]
    assert [(m["headers"]["id"], m["headers"]["retries"], bool(m["headers"]["eta"])) for m in again] == [
        ("t-later", 4, True)]
