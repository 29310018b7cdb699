"""Signups: one account, one grant, one key on the proxy, whatever happens to the message."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from pydantic import ValidationError

from schemas.events import SignupEvent
from tasks.signup import signup
from tests.fixtures import wait_for
from worker.credits import keys, ledger
from worker.credits.accounts import ensure_account
from worker.db import session_scope
from worker.models import DeadLetter, LedgerEntry
from worker.producer import publish_signup

EVENT = {"user_id": "alice@example.com", "email": "alice@example.com", "occurred_at": "2026-11-20T10:00:00Z"}


def balance(user_id: str) -> ledger.Balance | None:
    with session_scope() as session:
        return ledger.balance(session, user_id)


def test_signup_provisions_key_with_starting_budget(proxy):
    signup.apply(kwargs={"event": EVENT})
    key = proxy.key_by_alias("test-alice@example.com")
    assert key is not None and key["max_budget"] == 2.0 and key["budget_duration"] is None
    b = balance("alice@example.com")
    assert b.credited_usd == Decimal(2) and b.key_status == "active" and b.budget_pushed_usd == Decimal(2)


def test_duplicate_signup_sequential_and_concurrent_gives_one_key_and_grant(proxy):
    signup.apply(kwargs={"event": EVENT})
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: signup.apply(kwargs={"event": EVENT}), range(4)))
    assert len(proxy.keys) == 1
    with session_scope() as session:
        assert session.query(LedgerEntry).count() == 1
    assert balance("alice@example.com").credited_usd == Decimal(2)


def test_stored_key_is_encrypted_and_matches_proxy_token(proxy):
    signup.apply(kwargs={"event": EVENT})
    with session_scope() as session:
        from worker.models import Account

        account = session.get(Account, "alice@example.com")
        plaintext = keys.decrypt(account.key_encrypted)
    assert plaintext.startswith("sk-") and plaintext not in account.key_encrypted
    assert keys.key_hash(plaintext) == account.key_hash and account.key_hash in proxy.keys


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({**EVENT, "user_id": "bad user!"}, "user_id"),
        ({**EVENT, "occurred_at": "2026-11-20T10:00:00"}, "occurred_at"),
        ({"email": "x@y.z", "occurred_at": "2026-11-20T10:00:00Z"}, "user_id"),
        ({**EVENT, "user_id": "x" * 129}, "user_id"),
    ],
)
def test_malformed_signup_is_dead_lettered_naming_the_field(proxy, event, field):
    signup.apply(kwargs={"event": event})
    with session_scope() as session:
        letters = session.query(DeadLetter).all()
    assert len(letters) == 1 and letters[0].reason.startswith(field) and letters[0].task_name == "events.signup"
    assert not proxy.keys


def test_producer_rejects_bad_input_before_enqueueing(redis_client):
    with pytest.raises(ValidationError) as err:
        publish_signup({**EVENT, "user_id": ""})
    assert "user_id" in str(err.value)
    assert redis_client.llen("signups") == 0


def test_retry_after_key_generated_but_not_committed_adopts_the_key(proxy):
    """A worker that died after /key/generate and before committing: the retry must not make a second key."""
    with session_scope() as session:
        from worker.credits.signup import apply_signup

        apply_signup(session, SignupEvent.model_validate(EVENT))
    from worker.models import Account

    with session_scope() as session:
        account = session.get(Account, "alice@example.com")
        from worker import proxy as client

        client.generate_key(keys.decrypt(account.key_encrypted), account.key_alias, account.user_id, Decimal(2))
    signup.apply(kwargs={"event": EVENT})
    assert len(proxy.keys) == 1
    assert balance("alice@example.com").key_status == "active"


def test_published_signup_is_applied_by_a_real_worker(workers, proxy):
    workers.start()
    publish_signup(EVENT)
    wait_for(lambda: proxy.key_by_alias("test-alice@example.com"), 30, "the key on the proxy")
    wait_for(lambda: (b := balance("alice@example.com")) and b.budget_pushed_usd == Decimal(2), 10, "push recorded")


def test_two_workers_creating_one_new_account_at_the_same_instant_both_succeed():
    """A signup and a payment for a new user, at once, both create the account: one must find it
    made, not fail (chaos scenario 6c dead-lettered such a payment). The window is a few
    microseconds wide, so it is tried many times; before the fix about one try in 27 failed."""
    for n in range(200):
        start = threading.Barrier(2)

        def create(user_id: str = f"race-{n}@example.com", start: threading.Barrier = start) -> bool:
            with session_scope() as session:
                start.wait()
                return ensure_account(session, user_id)

        with ThreadPoolExecutor(2) as pool:
            created = [f.result() for f in [pool.submit(create) for _ in range(2)]]
        assert sorted(created) == [False, True]


def test_a_batch_of_signups_makes_its_keys_several_at_a_time(proxy):
    """One batch: one transaction, then the keys made concurrently (bounded by the pool of 8);
    a bad event in the batch is refused on its own."""
    from worker.credits.accounts import PROVISION_THREADS
    from worker.credits.signup import apply_signup_batch

    proxy.delays["/key/generate"] = 0.05  # long enough for requests to overlap
    events = [{"user_id": f"batch-{n:02d}", "occurred_at": "2026-11-20T10:00:00Z"} for n in range(20)]
    outcomes = apply_signup_batch([*events, {"user_id": "bad user!", "occurred_at": "2026-11-20T10:00:00Z"}])
    assert outcomes[:20] == [None] * 20 and isinstance(outcomes[20], ValidationError)
    assert proxy.requests == {"/key/generate": 20}
    assert 1 < proxy.peak_in_flight["/key/generate"] <= PROVISION_THREADS
    assert all(proxy.key_by_alias(f"test-batch-{n:02d}")["max_budget"] == 2.0 for n in range(20))


def test_signups_and_payments_pushed_together_write_each_key_once(workers, proxy):
    """A burst through a real worker, each user's signup queued just before its payment: the
    worker takes payments first (schemas.routes.FIRST_QUEUES), so each key is made once, at 12."""
    from sqlalchemy import func, select

    from worker.models import Account
    from worker.producer import publish_payment

    users = [f"burst-{n:03d}" for n in range(60)]
    for user in users:
        publish_signup({"user_id": user, "occurred_at": "2026-11-20T10:00:00Z"})
        publish_payment({"reference": f"p-{user}", "user_id": user, "amount_minor": 500, "currency": "USD",
                         "paid_at": "2026-11-20T10:00:00Z"})
    workers.start(concurrency=2)

    def all_at_twelve() -> bool:
        with session_scope() as session:
            return session.execute(select(func.count()).where(Account.key_status == "active",
                                                               Account.budget_pushed_usd == 12)).scalar_one() == 60

    wait_for(all_at_twelve, 60, "every account active at 12")
    assert all(proxy.key_by_alias(f"test-{u}")["max_budget"] == 12 for u in users)
    # Key writes only (the worker's start-up check reads /health/readiness and /key/list).
    assert {path: n for path, n in proxy.requests.items() if path not in ("/health/readiness", "/key/list")} \
        == {"/key/generate": 60}
