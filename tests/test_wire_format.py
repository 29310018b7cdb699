"""The Celery message a non-Python producer pushes by hand, as docs/events.md documents it.

Messages here are built with json, base64 and uuid only and pushed with a plain Redis LPUSH,
exactly as a Node.js producer would; a real `celery worker` must apply them.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest

from schemas.routes import ROUTES
from tests.fixtures import wait_for
from worker.credits import ledger
from worker.db import session_scope
from worker.models import Account, DeadLetter

SIGNUP = {"user_id": "carol", "email": "carol@example.com", "occurred_at": "2026-11-20T10:00:00Z"}
PAYMENT = {"provider": "paystack", "reference": "ps-ref-1", "user_id": "carol", "amount_minor": 500,
           "currency": "USD", "paid_at": "2026-11-20T11:00:00Z"}
FAST_REDELIVERY = {"BROKER_VISIBILITY_TIMEOUT_S": "4", "RETRY_BACKOFF_MAX_S": "1"}


def hand_built(task: str, event: dict[str, Any]) -> dict[str, Any]:
    """The message docs/events.md documents, field for field (what Celery 5 itself sends, less optional extras)."""
    task_id = str(uuid.uuid4())
    queue = ROUTES[task]
    body = [[], {"event": event}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    return {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {
            "lang": "js", "task": task, "id": task_id, "root_id": task_id, "parent_id": None,
            "group": None, "retries": 0, "eta": None, "expires": None, "timelimit": [None, None],
            "argsrepr": "()", "kwargsrepr": "{'event': ...}", "origin": "node-producer",
        },
        "properties": {
            "correlation_id": task_id,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
        },
    }


def minimal(task: str, event: dict[str, Any]) -> dict[str, Any]:
    """Only the fields the worker cannot do without (docs/events.md, "Wire format")."""
    full = hand_built(task, event)
    return {
        "body": full["body"],
        "content-type": "application/json",
        "headers": {"task": task, "id": full["headers"]["id"]},
        "properties": {k: full["properties"][k] for k in ("body_encoding", "delivery_tag", "delivery_info")},
    }


def without(message: dict[str, Any], path: str) -> dict[str, Any]:
    """The message less one field, given as a dotted path such as properties.delivery_info."""
    *parents, last = path.split(".")
    part = message
    for name in parents:
        part = part[name]
    del part[last]
    return message


def push(redis_client, task: str, message: dict[str, Any]) -> None:
    redis_client.lpush(ROUTES[task], json.dumps(message))


def credited(user_id: str) -> Decimal | None:
    with session_scope() as session:
        account = session.get(Account, user_id)
        if account is None or account.key_status != "active":
            return None
        return account.budget_pushed_usd


def dead_letters() -> list[DeadLetter]:
    with session_scope() as session:
        return session.query(DeadLetter).all()


def test_message_matches_what_celery_itself_sends(redis_client):
    """The documented fields are a subset of Celery's own message, with the same values where fixed."""
    from worker.producer import publish_signup

    publish_signup(SIGNUP)
    sent = json.loads(redis_client.lpop("signups"))
    ours = hand_built("events.signup", SIGNUP)
    assert json.loads(base64.b64decode(sent["body"])) == json.loads(base64.b64decode(ours["body"]))
    assert {k: sent[k] for k in ("content-type", "content-encoding")} == {
        k: ours[k] for k in ("content-type", "content-encoding")}
    assert set(ours["headers"]) <= set(sent["headers"])
    assert set(ours["properties"]) <= set(sent["properties"])
    for key in ("delivery_mode", "delivery_info", "priority", "body_encoding"):
        assert sent["properties"][key] == ours["properties"][key]
    assert sent["properties"]["correlation_id"] == sent["headers"]["id"] == sent["headers"]["root_id"]


@pytest.mark.parametrize("build", [hand_built, minimal], ids=["documented", "minimal"])
def test_hand_built_signup_is_applied_by_a_real_worker(workers, proxy, redis_client, build):
    workers.start()
    push(redis_client, "events.signup", build("events.signup", SIGNUP))
    wait_for(lambda: credited("carol") == Decimal(2), 30, "the hand-built signup to be applied")
    assert proxy.key_by_alias("test-carol")["max_budget"] == 2.0
    assert not dead_letters()


@pytest.mark.parametrize("build", [hand_built, minimal], ids=["documented", "minimal"])
def test_hand_built_payment_is_applied_by_a_real_worker(workers, proxy, redis_client, build):
    workers.start()
    push(redis_client, "events.signup", build("events.signup", SIGNUP))
    push(redis_client, "events.payment", build("events.payment", PAYMENT))
    # 2 for signing up, 5 USD x 2 for the payment, whichever queue is served first.
    wait_for(lambda: credited("carol") == Decimal(12), 30, "the hand-built payment to be applied")
    assert proxy.key_by_alias("test-carol")["max_budget"] == 12.0
    with session_scope() as session:
        assert ledger.entry(session, "payment:paystack:ps-ref-1").paid_usd == Decimal(5)
    assert not dead_letters()


def test_hand_built_payment_signed_as_node_would(workers, proxy, redis_client):
    """docs/events.md's signing recipe: HMAC-SHA256 hex over keys-sorted, whitespace-free JSON."""
    import hashlib
    import hmac

    secret = "node-shared-secret-0123456789abcdef"

    def sort_keys_deep(value: Any) -> Any:  # what docs/events.md's sortKeysDeep does
        if isinstance(value, dict):
            return {k: sort_keys_deep(value[k]) for k in sorted(value)}
        if isinstance(value, list):
            return [sort_keys_deep(v) for v in value]
        return value

    event = {**PAYMENT, "plan": "Starter – 5 €"}  # non-ASCII goes in as raw UTF-8, like JSON.stringify
    canonical = json.dumps(sort_keys_deep(event), separators=(",", ":"), ensure_ascii=False)
    signed = {**event, "signature": hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()}
    forged = {**PAYMENT, "reference": "ps-ref-2", "amount_minor": 2000, "signature": signed["signature"]}

    workers.start(env={"EVENT_SIGNING_SECRET": secret})
    signed_signup = {**SIGNUP, "signature": hmac.new(secret.encode(), json.dumps(
        sort_keys_deep(SIGNUP), separators=(",", ":"), ensure_ascii=False).encode(), hashlib.sha256).hexdigest()}
    push(redis_client, "events.signup", hand_built("events.signup", signed_signup))  # the key is made by the signup
    push(redis_client, "events.payment", hand_built("events.payment", signed))
    push(redis_client, "events.payment", hand_built("events.payment", forged))
    wait_for(lambda: credited("carol") == Decimal(12), 30, "the signed payment to be applied")
    wait_for(dead_letters, 30, "the forged payment to be dead-lettered")
    letters = dead_letters()
    assert len(letters) == 1 and letters[0].reason.startswith("bad signature")
    time.sleep(1)
    assert credited("carol") == Decimal(12)


def test_hand_built_message_survives_a_killed_worker(workers, proxy, redis_client):
    """delivery_info routes the unacked message back to its queue when its worker dies mid-task."""
    proxy.hang_s = 3.0
    proxy.mode = "hang"
    first = workers.start(env=FAST_REDELIVERY)
    push(redis_client, "events.signup", hand_built("events.signup", SIGNUP))
    wait_for(lambda: proxy.requests.get("/key/generate"), 30, "the worker to call /key/generate")
    workers.kill(first)
    assert redis_client.hlen("unacked") == 1 and redis_client.llen("signups") == 0
    proxy.mode = "ok"
    # kombu restores unacked messages older than the visibility timeout when a worker starts,
    # then sweeps again only every ~100 s (unacked_restore_interval x unacked_restore_throttle).
    time.sleep(int(FAST_REDELIVERY["BROKER_VISIBILITY_TIMEOUT_S"]) + 1)
    workers.start(env=FAST_REDELIVERY)
    wait_for(lambda: credited("carol") == Decimal(2), 30, "the redelivered hand-built signup")
    assert len(proxy.keys) == 1 and not dead_letters()


def test_hand_built_message_is_retried_while_the_proxy_fails(workers, proxy, redis_client):
    """Celery's retry re-publishes from the hand-built message's headers; none of it is lost."""
    proxy.mode = "error"
    workers.start(env=FAST_REDELIVERY)
    push(redis_client, "events.signup", minimal("events.signup", SIGNUP))
    wait_for(lambda: proxy.requests.get("/key/generate", 0) >= 2, 30, "at least one retry")
    proxy.mode = "ok"
    wait_for(lambda: credited("carol") == Decimal(2), 60, "the retried hand-built signup")
    assert not dead_letters()


# Each of these fields missing: today's outcome. A message the worker cannot run must become a
# dead letter, and the worker must go on consuming what follows it.
# Each of these once crashed, stalled or lost the message in stock kombu; worker/broker.py checks them.
REQUIRED = ("headers.task", "headers.id", "content-type", "properties.delivery_tag", "properties.body_encoding",
            "properties.delivery_info")


@pytest.mark.parametrize("field", REQUIRED)
def test_message_missing_a_required_field_is_dead_lettered(workers, proxy, redis_client, field):
    workers.start()
    push(redis_client, "events.signup", without(minimal("events.signup", {**SIGNUP, "user_id": "mallory"}), field))
    push(redis_client, "events.signup", minimal("events.signup", SIGNUP))
    wait_for(lambda: credited("carol") == Decimal(2), 20, "the next message to be applied")
    wait_for(dead_letters, 10, "a dead letter for the broken message")
    assert credited("mallory") is None


def test_callbacks_in_the_embed_are_refused_not_run(workers, proxy, redis_client):
    """Issue 20, 8: Celery would run a producer's callbacks after our task, here an adjustment
    minting 1,000 USD riding on a signup."""
    mint = {"task": "events.adjustment", "args": [], "options": {}, "immutable": True, "subtask_type": None,
            "kwargs": {"event": {"user_id": "mallory", "amount_usd": "1000", "reason": "x", "reference": "m1",
                                 "actor": "m", "occurred_at": "2026-11-20T10:00:00Z"}}}
    message = hand_built("events.signup", {**SIGNUP, "user_id": "mallory"})
    body = json.loads(base64.b64decode(message["body"]))
    body[2] = {"callbacks": [mint], "errbacks": None, "chain": [mint], "chord": None}
    message["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    workers.start()
    push(redis_client, "events.signup", message)
    push(redis_client, "events.signup", minimal("events.signup", SIGNUP))
    wait_for(lambda: credited("carol") == Decimal(2), 30, "the next message to be applied")
    wait_for(dead_letters, 10, "a dead letter for the message with callbacks")
    assert [d.reason for d in dead_letters()] == ["the message's embed carries callbacks, chain; tasks here take none"]
    with session_scope() as session:
        assert ledger.entry(session, "adjustment:m1") is None and session.get(Account, "mallory") is None
