"""`events.payment` and `events.refund` on queue `payments`: a ledger entry, then the key's new budget."""

from typing import Any

from schemas.events import PaymentEvent, RefundEvent
from worker.accounts import sync_key
from worker.alerts import check_alerts, credit_may_rearm
from worker.db import session_scope
from worker.logs import add_context
from worker.payments import apply_payment, apply_refund, check_signature
from worker.task_base import event_task


@event_task("events.payment")
def payment(event: dict[str, Any]) -> None:
    parsed = PaymentEvent.model_validate(event)
    add_context(user_id=parsed.user_id, idempotency_key=f"payment:{parsed.provider}:{parsed.reference}")
    check_signature(event)
    with session_scope() as session:
        apply_payment(session, parsed)
        rearm = credit_may_rearm(session, parsed.user_id)
    sync_key(parsed.user_id)
    if rearm:
        check_alerts(None, [parsed.user_id])


@event_task("events.refund")
def refund(event: dict[str, Any]) -> None:
    parsed = RefundEvent.model_validate(event)
    add_context(user_id=parsed.user_id, idempotency_key=f"refund:{parsed.provider}:{parsed.refund_reference}")
    check_signature(event)
    with session_scope() as session:
        apply_refund(session, parsed)
    sync_key(parsed.user_id)
    check_alerts(None, [parsed.user_id])
