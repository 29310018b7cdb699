"""`events.adjustment` and `events.redeem` on queue `payments`: an operator's correction, a promo code.

Both write one ledger entry, then set the key's max_budget to the new credited total.
"""

from typing import Any

from schemas.events import AdjustmentEvent, RedeemEvent
from worker import signing
from worker.credits.adjustments import adjust
from worker.credits.redemptions import redeem as apply_redemption
from worker.delivery.policy import event_task
from worker.logs import add_context


@event_task("events.adjustment")
def adjustment(event: dict[str, Any]) -> None:
    parsed = AdjustmentEvent.model_validate(event)
    add_context(user_id=parsed.user_id, idempotency_key=parsed.idempotency_key)
    # Signed like payments: an adjustment mints credit as surely as a payment does.
    signing.check(event)
    adjust(parsed)


@event_task("events.redeem")
def redeem(event: dict[str, Any]) -> None:
    parsed = RedeemEvent.model_validate(event)
    add_context(user_id=parsed.user_id)
    signing.check(event)  # a redemption credits whoever it names
    apply_redemption(parsed)
