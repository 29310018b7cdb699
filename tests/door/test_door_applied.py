"""Webhooks through serve, applied by real workers: credited once however often delivered, refunds
taken back from the payment's user, 503 while Redis is down and the provider's retry then credits."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select

from tests.door.conftest import SIGNING_SECRET, Door, auth, paystack_post, stripe_post
from tests.door.test_door_paystack import charge, refund_processed
from tests.door.test_door_stripe import refund_event, session_event
from tests.waiting import wait_for
from worker.db import session_scope
from worker.models import LedgerEntry

WORKER_ENV = {"EVENT_SIGNING_SECRET": SIGNING_SECRET}


def credited(door: Door, user_id: str) -> Decimal | None:
    answer = door.http.get(f"/v1/accounts/{user_id}", headers=auth())
    return Decimal(answer.json()["credited_usd"]) if answer.status_code == 200 else None


def entries(user_id: str, kind: str) -> int:
    with session_scope() as session:
        return session.execute(select(func.count()).select_from(LedgerEntry)
                               .where(LedgerEntry.user_id == user_id, LedgerEntry.kind == kind)).scalar_one()


def settled(workers, task_ids: list[str]) -> bool:
    out = workers.output()
    return all(f"[{task_id}] succeeded" in out for task_id in task_ids)


def signup(door: Door, user_id: str) -> str:
    answer = door.http.post("/v1/events/signup", headers=auth(),
                            json={"user_id": user_id, "occurred_at": "2026-11-20T10:00:00Z"})
    assert answer.status_code == 202
    return answer.json()["task_id"]


def test_a_paystack_charge_delivered_three_times_credits_once_and_its_refund_takes_it_back(door, workers, proxy):
    workers.start(env=WORKER_ENV)
    tasks = [signup(door, "ada")]
    wait_for(lambda: settled(workers, tasks), 60, "the signup")
    tasks = [paystack_post(door, charge("T-ADA-1", {"user_id": "ada"}, amount=500)).json()["task_id"]
             for _ in range(3)]
    wait_for(lambda: settled(workers, tasks), 60, "three deliveries of the charge")
    assert credited(door, "ada") == 12 and entries("ada", "payment") == 1
    assert proxy.key_by_alias("test-ada")["max_budget"] == 12
    task = paystack_post(door, refund_processed("T-ADA-1", amount="500")).json()["task_id"]
    wait_for(lambda: settled(workers, [task]), 60, "the refund")
    assert credited(door, "ada") == 2 and proxy.key_by_alias("test-ada")["max_budget"] == 2


def test_a_stripe_checkout_and_its_refund_reported_twice_apply_once(door, workers, proxy):
    workers.start(env=WORKER_ENV)
    first = signup(door, "ada")
    wait_for(lambda: settled(workers, [first]), 60, "the signup")
    task = stripe_post(door, session_event(amount_total=1500)).json()["task_id"]
    wait_for(lambda: settled(workers, [task]), 60, "the checkout")
    assert credited(door, "ada") == 32
    refund = {**refund_event(), "data": {"object": {**refund_event()["data"]["object"], "amount": 1500}}}
    tasks = [stripe_post(door, {**refund, "type": kind, "id": f"evt_{kind}"}).json()["task_id"]
             for kind in ("refund.created", "refund.updated")]
    wait_for(lambda: settled(workers, tasks), 60, "both refund events")
    assert credited(door, "ada") == 2 and entries("ada", "refund") == 1
    assert proxy.key_by_alias("test-ada")["max_budget"] == 2


def test_redis_down_is_a_503_and_the_providers_retry_is_credited_once(tmp_path, private_redis, workers, proxy):
    env = {"REDIS_URL": private_redis.url()}
    door = Door(tmp_path / "serve.log", env)
    try:
        workers.start(env={**WORKER_ENV, **env})
        first = signup(door, "ada")
        wait_for(lambda: settled(workers, [first]), 60, "the signup")
        private_redis.kill()
        delivery = charge("T-OUTAGE-1", {"user_id": "ada"}, amount=500)
        answer = paystack_post(door, delivery)
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert door.http.get("/healthz").json() == {"status": "down", "redis": "down", "postgres": "ok"}
        private_redis.start()
        answer = paystack_post(door, delivery)  # Paystack's retry
        assert answer.status_code == 200
        wait_for(lambda: settled(workers, [answer.json()["task_id"]]), 90, "the retried charge")
        assert credited(door, "ada") == 12 and entries("ada", "payment") == 1
        assert "Traceback" not in door.output()
    finally:
        door.stop()
