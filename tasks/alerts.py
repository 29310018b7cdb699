"""`ops.alert_webhook` on queue `spend`: one fired balance alert POSTed, retried with backoff until it lands.

Internal: worker.alerts.stream sends it with the id of a fired_alerts row, and nothing else is
accepted (unknown fields are refused, an unknown id is dead-lettered)."""

from typing import Any

from schemas.messages import AlertWebhook
from worker.alerts import webhook
from worker.delivery.policy import event_task
from worker.logs import add_context


@event_task("ops.alert_webhook")
def alert_webhook(event: dict[str, Any]) -> None:
    parsed = AlertWebhook.model_validate(event)
    add_context(idempotency_key=f"fired_alert:{parsed.fired_alert_id}")
    webhook.post_fired(parsed.fired_alert_id)
