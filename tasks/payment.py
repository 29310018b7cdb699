"""`events.payment` and `events.refund` on queue `payments`: a ledger entry, then the key's new budget.

Payments run in batches (worker.delivery.batching): the worker hands the ones waiting to the pool together.
"""

from typing import Any

from schemas.events import RefundEvent, payment_key
from worker import signing
from worker.alerts.checks import check_alerts
from worker.credits.accounts import sync_key
from worker.credits.payment_batch import apply_payment_batch
from worker.credits.refunds import apply_refund, refund_user
from worker.db import session_scope
from worker.delivery.batching import batch_event_task
from worker.delivery.policy import event_task
from worker.logs import add_context


def _about(event: Any) -> dict[str, Any]:
    """Log context of a payment, read from its raw fields: it must not fail on a bad event."""
    if not isinstance(event, dict):
        return {}
    return {"user_id": event.get("user_id"),
            "idempotency_key": payment_key(event.get("provider", "paystack"), event.get("reference"))}


payment = batch_event_task("events.payment", about=_about)(apply_payment_batch)


@event_task("events.refund")
def refund(event: dict[str, Any]) -> None:
    parsed = RefundEvent.model_validate(event)
    add_context(user_id=parsed.user_id, idempotency_key=parsed.idempotency_key)
    signing.check(event)
    with session_scope() as session:
        # A refund may name no user (Paystack's does not): it is its payment's user's.
        parsed = parsed.model_copy(update={"user_id": refund_user(session, parsed)})
        add_context(user_id=parsed.user_id)
        apply_refund(session, parsed)
    sync_key(parsed.user_id, provision_unsigned=False)  # as for payments: the signup makes the key
    check_alerts([parsed.user_id])
