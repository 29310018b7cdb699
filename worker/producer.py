"""The producer API for the web app and the payment relay: validate, sign, enqueue by task name.

Non-Python producers push the same Celery message themselves; docs/events.md shows its exact JSON.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from schemas.events import AdjustmentEvent, PaymentEvent, RedeemEvent, RefundEvent, SignupEvent
from schemas.routes import EVENT_TASKS
from worker import signing
from worker.app import app
from worker.settings import get_settings

# Shown by Flower and in worker logs through the message's kwargsrepr, so masked there. A promo
# code is a bearer credential until it is used up.
SENSITIVE = frozenset({"signature", "code"})


def shown(event: Any) -> str:
    """The kwargsrepr of a message carrying this event: what Flower and the logs show."""
    if isinstance(event, dict):
        event = {k: "***" if k in SENSITIVE else v for k, v in event.items()}
    return repr({"event": event})


def enqueue(task: str, event: dict[str, Any]) -> str:
    """Send one event to its task by name (routes pick the queue), masked for Flower and logs.

    Producers' tasks only: the worker's own (ops.*, spend.*) are not for anyone else to send."""
    if task not in EVENT_TASKS.values():
        raise ValueError(f"{task!r} is not an event task; producers send only {', '.join(EVENT_TASKS.values())}")
    return app.send_task(task, kwargs={"event": event}, kwargsrepr=shown(event)).id


def _signed(event: dict[str, Any]) -> dict[str, Any]:
    # Signups too: the worker checks a signup's signature whenever the secret is set.
    secret = get_settings().event_signing_secret
    if secret is None:
        return event
    return {**event, "signature": signing.sign(event, secret.get_secret_value())}


def _publish(task: str, model: type[BaseModel], event: BaseModel | dict[str, Any]) -> str:
    """Validate (raising pydantic.ValidationError on bad input) and enqueue; returns the task id."""
    body = model.model_validate(event).model_dump(mode="json", exclude_none=True, exclude={"signature"})
    return enqueue(task, _signed(body))


def publish_signup(event: SignupEvent | dict[str, Any]) -> str:
    return _publish("events.signup", SignupEvent, event)


def publish_payment(event: PaymentEvent | dict[str, Any]) -> str:
    return _publish("events.payment", PaymentEvent, event)


def publish_refund(event: RefundEvent | dict[str, Any]) -> str:
    return _publish("events.refund", RefundEvent, event)


def publish_adjustment(event: AdjustmentEvent | dict[str, Any]) -> str:
    return _publish("events.adjustment", AdjustmentEvent, event)


def publish_redeem(event: RedeemEvent | dict[str, Any]) -> str:
    return _publish("events.redeem", RedeemEvent, event)
