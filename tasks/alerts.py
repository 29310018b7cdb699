"""`ops.alert_webhook` on queue `spend`: one balance alert POSTed, retried with backoff until it lands."""

from typing import Any

from worker import webhook
from worker.logs import add_context
from worker.task_base import event_task


@event_task("ops.alert_webhook")
def alert_webhook(event: dict[str, Any]) -> None:
    add_context(user_id=event.get("user_id"), idempotency_key=event.get("alert_id"))
    webhook.post(event)
