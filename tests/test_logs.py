"""Logs: with LOG_FORMAT=json a real worker writes one JSON object per line, event context on each."""

from __future__ import annotations

import json
import logging

from tests.fixtures import wait_for
from worker.credits import ledger
from worker.db import session_scope
from worker.logs import JsonFormatter, Redact, TextFormatter, bind
from worker.models import DeadLetter
from worker.producer import publish_payment, publish_signup

SIGNUP = {"user_id": "carol@example.com", "email": "carol@example.com", "occurred_at": "2026-11-20T10:00:00Z"}
PAYMENT = {"provider": "paystack", "reference": "pay-log-1", "user_id": "carol@example.com", "amount_minor": 500,
           "currency": "USD", "paid_at": "2026-11-20T11:00:00Z"}
BAD_PAYMENT = {**PAYMENT, "reference": "pay-log-2", "amount_minor": 700}  # matches no plan: dead-lettered


def _credited(user_id: str):
    with session_scope() as session:
        b = ledger.balance(session, user_id)
        return b.credited_usd if b else None


def _dead_letters() -> int:
    with session_scope() as session:
        return session.query(DeadLetter).count()


def test_worker_writes_only_json_lines_with_event_context(workers, proxy):
    workers.start(env={"LOG_FORMAT": "json"})
    publish_signup(SIGNUP)
    wait_for(lambda: _credited("carol@example.com") == 2, 30, "the signup grant")
    publish_payment(PAYMENT)
    publish_payment(BAD_PAYMENT)
    wait_for(lambda: _credited("carol@example.com") == 12, 30, "the payment credit")
    wait_for(lambda: _dead_letters() == 1, 30, "the rejected payment's dead letter")
    wait_for(lambda: workers.output().count("succeeded in") >= 3, 30, "three task completions logged")

    lines = [json.loads(line) for line in workers.output().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    about_events = [line for line in lines if "task_id" in line]
    kinds = {line["kind"] for line in about_events}
    assert {"events.signup", "events.payment"} <= kinds
    # Every line logged while handling an event names the event, its user and its idempotency key.
    handled = [line for line in about_events if line["logger"].startswith("worker.")]
    assert handled, "no line logged by our code inside a task"
    for line in handled:
        assert line["user_id"] == "carol@example.com" and line["idempotency_key"].startswith(("signup:", "payment:"))
    dead = [line for line in handled if line["message"].startswith("dead-lettered")]
    assert len(dead) == 1 and dead[0]["idempotency_key"] == "payment:paystack:pay-log-2" and dead[0]["level"] == "error"
    # Celery's own lines carry the task id and kind and no event body; its outcome lines, logged
    # after the task ran, also the user and idempotency key.
    celery_lines = [line for line in about_events if line["logger"].startswith("celery.")]
    assert sum(line["message"].endswith("received") for line in celery_lines) == 3
    assert all("data" not in line and "carol@example.com" not in line["message"] for line in celery_lines)
    outcomes = [line for line in celery_lines if "succeeded in" in line["message"]]
    assert len(outcomes) == 3
    assert all(line["user_id"] == "carol@example.com" and "idempotency_key" in line for line in outcomes)


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("worker.test", logging.INFO, __file__, 1, message, (), None)


def test_text_format_is_one_readable_line_with_context_and_no_secret():
    record = _record("pushed sk-abcdefghijklmnop to the proxy")
    with bind(task_id="t-1", kind="events.payment", user_id="u1", idempotency_key="payment:paystack:r1"):
        Redact().filter(record)
    line = TextFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert "\n" not in line and "sk-abcdefghijklmnop" not in line and "sk-***" in line
    assert "task_id=t-1 kind=events.payment user_id=u1 idempotency_key=payment:paystack:r1" in line
    assert json.loads(JsonFormatter().format(record))["idempotency_key"] == "payment:paystack:r1"
