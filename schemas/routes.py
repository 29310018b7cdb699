"""Which queue each task's messages go on: the one table producers, the Celery app and the
JSON Schemas read. Producers send by task name; the worker never needs their code."""

from __future__ import annotations

QUEUES = ("signups", "payments", "spend", "periodic")
# Queues a worker takes from first, in this order, whenever they hold a message
# (worker.delivery.broker); the others follow in turn. The beat's jobs first, so a burst of events
# queued ahead cannot starve them past their interval. Payments before signups: a payment applied
# before its signup is in the key's first max_budget, so a new user whose signup and payment are
# queued together costs one key write, not a /key/generate and then an update. Payments are
# applied in batches hundreds a second, so signups wait only while that queue is not empty.
FIRST_QUEUES = ("periodic", "payments")

# Task name -> queue. The events.* tasks are what producers send; the others are the beat's and
# the worker's own.
ROUTES = {
    "events.signup": "signups",
    "events.payment": "payments",
    "events.refund": "payments",
    "events.adjustment": "payments",
    "events.redeem": "payments",
    "spend.sync": "periodic",
    "spend.window": "spend",
    "spend.retention": "periodic",
    "ops.reconcile": "periodic",
    "ops.expire_credit": "periodic",
    "ops.alert_webhook": "spend",
}

# The event models' names (schemas.events.EVENT_MODELS) and the task each is sent to.
EVENT_TASKS = {"signup": "events.signup", "payment": "events.payment", "refund": "events.refund",
               "adjustment": "events.adjustment", "redeem": "events.redeem"}
