"""Scenario 7d, what a producer puts in its envelope: a wrong delivery_info, a deadline or a time
limit, a repeated delivery tag, an oversized item, or a signature in a retry never drops or
exposes an event. Each test reproduces a hole found by review (issue 14, part 2) against real
workers; and a live worker's long task is never handed out twice by the heartbeat sweep."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.chaos.harness import RETRY_LINE, Event, Publisher, poll, read_state, settle
from tests.conftest import TEST_ENV
from tests.test_wire_format import hand_built
from worker.producer import shown
from worker.settings import Settings
from worker.signing import sign

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]
DB = TEST_ENV["DATABASE_URL"]
DEFAULT_VISIBILITY = {"BROKER_VISIBILITY_TIMEOUT_S": str(Settings.model_fields["broker_visibility_timeout_s"].default)}


def signup(user: str) -> Event:
    return Event("events.signup", {"user_id": user, "occurred_at": "2026-11-20T10:00:00Z"}, f"signup:{user}", user)


def payment(user: str, ref: str) -> Event:
    return Event("events.payment", {"provider": "paystack", "reference": ref, "user_id": user, "amount_minor": 500,
                                    "currency": "USD", "paid_at": "2026-11-20T10:05:00Z"},
                 f"payment:paystack:{ref}", user)


def refund(user: str, ref: str, of: str) -> Event:
    return Event("events.refund", {"provider": "paystack", "refund_reference": ref, "payment_reference": of,
                                   "user_id": user, "amount_minor": 500, "currency": "USD",
                                   "refunded_at": "2026-11-21T09:00:00Z"}, f"refund:paystack:{ref}", user)


def push(broker, ev: Event, headers: dict[str, Any] | None = None, **properties: Any) -> dict[str, Any]:
    """The message README documents, by hand, with some of its fields as a careless producer sets them."""
    message = hand_built(ev.task, ev.body)
    message["headers"].update(headers or {})
    message["properties"].update(properties)
    broker.lpush(ev.queue, json.dumps(message))
    return message


def retries(pool) -> int:
    return sum(1 for line in pool.log_lines() if RETRY_LINE.search(line))


def retried(pool, at_least: int = 1) -> bool:
    return retries(pool) >= at_least


def test_a_wrong_delivery_info_does_not_send_a_retry_elsewhere(pool, chaos_proxy, broker):
    """(a) A refund waiting for its payment, and a signup retried while the proxy fails, each with
    a delivery_info naming another exchange and routing key: their retries stay on their queue."""
    pool.start()
    wrong = {"delivery_info": {"exchange": "elsewhere", "routing_key": "nowhere"}}
    pay, back, new = payment("ada", "p-a"), refund("ada", "r-a", "p-a"), signup("bob")
    push(broker, back, **wrong)
    poll(lambda: retried(pool), 30, "the refund to wait for its payment", 0.2)
    chaos_proxy.mode = "error"
    push(broker, new, **wrong)
    poll(lambda: retried(pool, 3), 30, "the signup to be retried", 0.2)
    chaos_proxy.mode = "ok"
    push(broker, pay, **wrong)
    settle(DB, chaos_proxy, broker, [pay, back, new], timeout=60, what="every event applied once")


def test_producer_set_expires_and_timelimit_drop_no_event(pool, chaos_proxy, broker):
    """(b) A payment already expired, a signup expiring while the proxy fails (its retries would
    carry the deadline), a refund with a 5 ms hard time limit: each is applied."""
    pool.start()
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    pay, back, new = payment("cy", "p-c"), refund("cy", "r-c", "p-c"), signup("dee")
    push(broker, pay, {"expires": "2026-01-01T00:00:00+00:00"})
    settle(DB, chaos_proxy, broker, [pay], timeout=60, what="the expired payment applied")
    push(broker, back, {"timelimit": [0.005, None]})
    chaos_proxy.mode = "error"
    push(broker, new, {"expires": soon})
    poll(lambda: retried(pool) and datetime.now(UTC).isoformat() > soon, 30, "retries up to the deadline", 0.2)
    so_far = retries(pool)
    poll(lambda: retried(pool, so_far + 1), 30, "a retry after the deadline", 0.2)
    chaos_proxy.mode = "ok"
    state, _ = settle(DB, chaos_proxy, broker, [pay, back, new], timeout=60, what="every event applied once")
    assert not state.dead


def test_a_repeated_delivery_tag_erases_no_record_and_a_kill_loses_nothing(pool, chaos_proxy, broker):
    """(c) Two messages with one delivery tag, taken by a worker that is then SIGKILLed: both come
    back (with the default visibility timeout, by the heartbeat) and are applied."""
    pool.env.update(DEFAULT_VISIBILITY)
    victim = pool.start()
    chaos_proxy.hang_s = 5.0
    chaos_proxy.mode = "hang"
    events = [signup("eve"), signup("fay")]
    for ev in events:
        push(broker, ev, delivery_tag="the-same-tag")
    poll(lambda: broker.llen("signups") == 0 and chaos_proxy.requests.get("/key/generate"), 30,
         "the worker to take both and call the proxy", 0.1)
    records = broker.hlen("unacked")
    pool.kill(victim)
    chaos_proxy.mode = "ok"
    pool.start()
    settle(DB, chaos_proxy, broker, events, timeout=90, what="both signups applied after the kill")
    assert records == 2


def test_an_oversized_item_never_reaches_the_worker_whole(pool, chaos_proxy, broker):
    """(d) A 40 MiB item is dead-lettered as oversized; the consumer's peak memory barely moves.
    It is pushed while the idle worker waits on that one queue: a wait that returns the item it
    wakes on (BLMOVE of the queue onto itself, as before) reads it whole, 120 MiB of peak memory."""
    worker = pool.start(queues="signups")
    good = signup("gus")
    push(broker, good)
    settle(DB, chaos_proxy, broker, [good], timeout=60, what="a first signup")
    before = peak_rss_kib(worker.pid)
    poll(lambda: any("b" in c["flags"] for c in broker.client_list()), 30, "the idle worker waiting", 0.01)
    broker.lpush("signups", b'{"body": "' + b"A" * (40 * 1024 * 1024) + b'"}')
    (letter,) = poll(lambda: read_state(DB).dead, 60, "the oversized item dead-lettered", 0.2)
    grown_mib = (peak_rss_kib(worker.pid) - before) / 1024
    assert letter["reason"].startswith("oversized message: 41943052 bytes"), letter
    assert grown_mib < 10, f"the consumer's peak memory grew by {grown_mib:.0f} MiB"
    assert broker.hlen("unacked") == 0 and broker.llen("signups") == 0


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_a_retried_refund_keeps_its_signature_masked(pool, chaos_proxy, broker):
    """(e) A signed refund retried while its payment is missing: the retry's kwargsrepr (what the
    unacked hash and Flower show) still masks the signature."""
    secret = "a-signing-secret-of-at-least-32-bytes-for-7d"
    pool.env["EVENT_SIGNING_SECRET"] = secret
    pool.start()
    back = refund("hal", "r-h", "p-h")
    signed = {**back.body, "signature": sign(back.body, secret)}
    publisher = Publisher(TEST_ENV["REDIS_URL"])
    publisher.app.send_task(back.task, kwargs={"event": signed}, kwargsrepr=shown(signed), producer=publisher.producer)

    def retries_held() -> list[tuple[str, dict[str, Any]]]:
        held = [(r.decode(), json.loads(r)[0]) for r in broker.hvals("unacked")]
        return [(raw, m) for raw, m in held if m["headers"].get("retries")]

    for raw, held in poll(retries_held, 30, "the refund's retry waiting in the unacked hash", 0.1):
        assert signed["signature"] not in raw, held["headers"]["kwargsrepr"]
        assert "'***'" in held["headers"]["kwargsrepr"]
    pay = payment("hal", "p-h")
    pay_signed = {**pay.body, "signature": sign(pay.body, secret)}
    publisher.app.send_task(pay.task, kwargs={"event": pay_signed}, kwargsrepr=shown(pay_signed),
                            producer=publisher.producer)
    publisher.close()
    settle(DB, chaos_proxy, broker, [pay, back], timeout=60, what="the payment and its refund applied")


def test_a_live_workers_long_task_is_not_handed_out_twice(pool, chaos_proxy, broker):
    """The sweep gives back only what dead workers held: a task running for 3 heartbeats on a live
    worker is delivered once, while another worker sweeps every second."""
    env = {"BROKER_HEARTBEAT_S": "5", "PROXY_TIMEOUT_S": "30", **DEFAULT_VISIBILITY}
    pool.env.update(env)
    pool.start_many(2)
    chaos_proxy.hang_s = 15.0
    chaos_proxy.mode = "hang"
    ev = signup("ike")
    started = time.monotonic()
    push(broker, ev)
    poll(lambda: chaos_proxy.requests.get("/key/generate"), 30, "the long task to start", 0.1)
    chaos_proxy.mode = "ok"  # the request in flight still hangs its 15 s
    settle(DB, chaos_proxy, broker, [ev], timeout=60, what="the long task applied")
    assert time.monotonic() - started >= 15
    assert list(pool.deliveries().values()) == [1], pool.deliveries()
