"""`ops.alert_webhook` on queue `spend`: one balance alert POSTed, retried with backoff until it lands."""

from typing import Any

from worker.alerts import webhook
from worker.delivery.policy import event_task
from worker.logs import add_context


@event_task("ops.alert_webhook")
def alert_webhook(event: dict[str, Any]) -> None:
    add_context(user_id=event.get("user_id"), idempotency_key=event.get("alert_id"))
    webhook.post(event)
