"""The producer acknowledges only what is queued: its send returns once the message is on the Redis
list, and raises when Redis cannot take it (the door answers 503 then)."""

from __future__ import annotations

import pytest

from worker import producer
from worker.door.relay import BROKER_DOWN

REFUND = {"refund_reference": "R1", "payment_reference": "P1", "amount_minor": 500, "currency": "USD",
          "refunded_at": "2026-11-20T10:00:00Z"}


@pytest.fixture
def producer_on(private_redis, monkeypatch):
    """This process's Celery app sending to the private Redis; its connection pools dropped after."""
    from worker.app import app

    def fresh_pools() -> None:
        if app._pool is not None:
            app._pool.force_close_all()
        app._pool, app.amqp._producer_pool = None, None

    fresh_pools()
    monkeypatch.setattr(app.conf, "broker_url", private_redis.url())
    yield app
    fresh_pools()


def test_enqueue_returns_once_the_message_is_on_the_redis_list(private_redis, producer_on):
    app = producer_on
    with app.connection_for_write() as conn:
        assert conn.as_uri().endswith(f":{private_redis.port}/0")
    task_id = producer.publish_refund(REFUND)
    assert task_id and private_redis.client().llen("payments") == 1
    private_redis.kill()
    with pytest.raises(BROKER_DOWN):  # what the door turns into a 503
        producer.publish_refund({**REFUND, "refund_reference": "R2"})
