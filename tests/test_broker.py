"""The guarded Redis transport against the real Redis, without a worker around it."""

from __future__ import annotations

import json

import tasks.signup  # noqa: F401 - registers events.signup, which the messages name
from tasks.payment import payment
from worker.app import app
from worker.db import session_scope
from worker.models import DeadLetter


def test_a_message_acked_after_its_connection_was_lost_stops_nothing_and_comes_back(redis_client):
    """A task that finishes while the broker is away is acked after the reconnect, on the channel
    the lost connection closed; that ack must not raise (it stopped a worker in chaos scenario 5)."""
    payment.apply_async(kwargs={"event": {"reference": "r-1"}}, task_id="t-1")
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue("payments")
        message = queue.get(timeout=5)
        assert redis_client.hlen("unacked") == 1
        # What a lost connection leaves: the channel closed, and its client pool gone (closing
        # drops it; here the give-back at close re-made it, with Redis away that fails too).
        message.channel.close()
        message.channel._disconnect_pools()
        message.ack()
        queue.close()
    # Closing gave it back, Redis being there to take it; otherwise the unacked sweep would.
    assert redis_client.llen("payments") == 1 and redis_client.hlen("unacked") == 0


def _raw(task: str = "events.signup", tag: str | None = None, **info: str) -> bytes:
    from tests.test_wire_format import SIGNUP, hand_built

    message = hand_built(task, SIGNUP)
    if tag is not None:
        message["properties"]["delivery_tag"] = tag
    message["properties"]["delivery_info"].update(info)
    return json.dumps(message).encode()


def _records(redis_client) -> dict[str, list]:
    return {k.decode(): json.loads(v) for k, v in redis_client.hgetall("unacked").items()}


def test_the_messages_of_a_worker_whose_heartbeat_stopped_go_back_and_a_live_ones_stay(redis_client):
    """A reservation carries its taker; the sweep gives back only those whose taker is silent."""
    redis_client.lpush("signups", _raw(), _raw())
    with app.connection_for_read() as dead, app.connection_for_read() as live:
        taken = [conn.SimpleQueue("signups").get(timeout=5) for conn in (dead, live)]
        owners = {m.delivery_tag.rpartition("/")[0] for m in taken}
        assert len(owners) == 2 and redis_client.llen("signups") == 0 and redis_client.hlen("unacked") == 2
        live.default_channel.qos.restore_visible()  # both heartbeats still fresh: nothing moves
        assert redis_client.llen("signups") == 0
        redis_client.delete(f"unacked_alive:{taken[0].channel.owner}")  # as if SIGKILLed 15 s ago
        live.default_channel.qos.restore_visible()
        assert redis_client.llen("signups") == 1 and list(_records(redis_client)) == [taken[1].delivery_tag]
        assert json.loads(redis_client.lindex("signups", 0))["headers"]["id"] == taken[0].headers["id"]
        taken[1].ack()
    assert redis_client.hlen("unacked") == 0 and redis_client.scard("unacked_owners") <= 2


def test_two_messages_with_one_delivery_tag_keep_a_record_each(redis_client):
    """The record is keyed by the transport's tag: a producer's repeated tag erases nothing."""
    redis_client.lpush("signups", _raw(tag="same"), _raw(tag="same"))
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue("signups")
        first, second = queue.get(timeout=5), queue.get(timeout=5)
        assert first.delivery_tag != second.delivery_tag and redis_client.hlen("unacked") == 2
        redis_client.delete(f"unacked_alive:{first.channel.owner}")
        first.channel.qos.restore_visible()
    assert redis_client.llen("signups") == 2 and redis_client.hlen("unacked") == 0


def test_a_message_belongs_to_the_queue_it_was_taken_from(redis_client):
    """Whatever its delivery_info names, a message is acked, given back and retried on its queue."""
    redis_client.lpush("signups", _raw(exchange="elsewhere", routing_key="nowhere"))
    with app.connection_for_read() as conn:
        message = conn.SimpleQueue("signups").get(timeout=5)
        assert message.delivery_info["exchange"] == "" and message.delivery_info["routing_key"] == "signups"
        assert list(_records(redis_client).values())[0][1:] == ["", "signups"]
        message.requeue()
    assert redis_client.llen("signups") == 1 and redis_client.hlen("unacked") == 0


def test_an_events_producer_set_expiry_and_time_limit_are_cleared_at_take(redis_client):
    message = json.loads(_raw("events.payment"))
    message["headers"].update(expires="2020-01-01T00:00:00+00:00", timelimit=[0.005, None])
    redis_client.lpush("payments", json.dumps(message))
    with app.connection_for_read() as conn:
        taken = conn.SimpleQueue("payments").get(timeout=5)
        assert taken.headers["expires"] is None and taken.headers["timelimit"] == [None, None]
        taken.ack()


def test_an_oversized_item_is_measured_in_redis_and_only_its_head_leaves_it(redis_client):
    from worker.delivery.broker import HEAD_BYTES

    size = 8 * 1024 * 1024
    redis_client.lpush("signups", b"x" * size)
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        _, item, tag, measured = redis_client.eval(*channel._take_args(["signups"]))
        assert measured == size and len(item) == HEAD_BYTES and redis_client.hlen("unacked") == 1
        assert channel._checked("signups", item, tag.decode(), measured) is None  # dead-lettered
    assert redis_client.hlen("unacked") == 0 and redis_client.llen("signups") == 0
    with session_scope() as session:
        letter = session.query(DeadLetter).one()
        assert letter.reason.startswith(f"oversized message: {size} bytes") and len(letter.payload) == HEAD_BYTES


def test_a_task_off_its_own_queue_is_dead_lettered_and_never_runs(redis_client):
    """The producers' queues take events only: the worker's own tasks (here spend.window, whose
    arguments pick a window to read) and events misrouted to another queue are refused."""
    from queue import Empty

    import pytest

    import tasks.spend  # noqa: F401 - registers spend.window

    redis_client.lpush("payments", _raw("spend.window"))
    redis_client.lpush("payments", _raw("events.signup"))
    with app.connection_for_read() as conn:
        with pytest.raises(Empty):
            conn.SimpleQueue("payments").get(timeout=1)
    assert redis_client.llen("payments") == 0 and redis_client.hlen("unacked") == 0
    with session_scope() as session:
        reasons = sorted(letter.reason for letter in session.query(DeadLetter))
    assert reasons == ["task 'events.signup' is not taken from queue 'payments'; its queue is 'signups'",
                       "task 'spend.window' is not taken from queue 'payments'; its queue is 'spend'"]
