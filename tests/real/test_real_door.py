"""`serve` end to end against the real proxy: a Paystack charge through the door raises the key's
max_budget to 12, redeliveries change nothing, refund.processed brings it back to 2, and with Redis
stopped the door answers 503 until the provider's retry goes through."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from tests.door.conftest import SIGNING_SECRET, Door, auth, paystack_post
from tests.door.conftest import private_redis as private_redis  # noqa: F401 (a fixture, used by name)
from tests.door.test_door_paystack import charge, refund_processed
from tests.fixtures import wait_for
from worker import proxy as client
from worker.credits import keys
from worker.db import session_scope
from worker.models import Account

pytestmark = pytest.mark.real_proxy


def max_budget(user_id: str) -> Decimal | None:
    with session_scope() as session:
        account = session.get(Account, user_id)
        if account is None or account.key_status != "active":
            return None
        key = keys.decrypt(account.key_encrypted)
    return client.key_info(keys.key_hash(key)).info.max_budget


def settled(workers, task_ids: list[str]) -> bool:
    out = workers.output()
    return all(f"[{task_id}] succeeded" in out for task_id in task_ids)


def test_paystack_through_serve_moves_the_real_keys_budget(real_env, workers, private_redis, tmp_path):
    redis_env = {"REDIS_URL": private_redis.url()}
    workers.start(env={**real_env, **redis_env, "EVENT_SIGNING_SECRET": SIGNING_SECRET})
    door = Door(tmp_path / "serve.log", redis_env)  # without LITELLM_MASTER_KEY or KEY_ENCRYPTION_KEY
    try:
        user = f"u-{uuid.uuid4().hex[:8]}"
        answer = door.http.post("/v1/events/signup", headers=auth(),
                                json={"user_id": user, "occurred_at": "2026-11-20T10:00:00Z"})
        assert answer.status_code == 202
        wait_for(lambda: max_budget(user) == 2, 60, "the key with 2 USD")

        paid = charge(f"T-{uuid.uuid4().hex[:10]}", {"user_id": user}, amount=500)
        first = paystack_post(door, paid)
        assert first.status_code == 200
        wait_for(lambda: max_budget(user) == 12, 60, "max_budget 12 on the proxy")

        again = [paystack_post(door, paid) for _ in range(3)]
        assert all(a.status_code == 200 for a in again)
        wait_for(lambda: settled(workers, [a.json()["task_id"] for a in again]), 60, "the redeliveries")
        assert max_budget(user) == 12
        assert door.http.get(f"/v1/accounts/{user}", headers=auth()).json()["credited_usd"].startswith("12.")

        refunded = paystack_post(door, refund_processed(paid["data"]["reference"], amount="500"))
        assert refunded.status_code == 200
        wait_for(lambda: max_budget(user) == 2, 60, "max_budget back to 2")

        private_redis.kill()
        paid_again = charge(f"T-{uuid.uuid4().hex[:10]}", {"user_id": user}, amount=500)
        assert paystack_post(door, paid_again).status_code == 503
        private_redis.start()
        assert paystack_post(door, paid_again).status_code == 200  # the provider's retry
        wait_for(lambda: max_budget(user) == 12, 90, "the retried charge on the proxy")
    finally:
        door.stop()
