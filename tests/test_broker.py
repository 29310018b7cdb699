"""The guarded Redis transport against the real Redis, without a worker around it."""

from __future__ import annotations

from tasks.payment import payment
from worker.app import app


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
