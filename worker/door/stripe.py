"""POST /webhooks/stripe: paid checkouts -> events.payment, succeeded refunds -> events.refund.

Stripe-Signature is checked by the official package (Webhook.construct_event, tolerance 300 s)
before anything else reads the body. Refunds come from refund.created and refund.updated: on
current API versions charge.refunded no longer embeds the refund list, while these carry the
Refund itself (its id, amount, payment_intent and status). A refund is sent when its status is
succeeded, by whichever of the two says so first; the event's idempotency key (the refund id)
makes the other a no-op.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import stripe
from fastapi import APIRouter, Request

from worker.door import relay
from worker.door.body import Refused, signed_body
from worker.producer import publish_payment, publish_refund

log = logging.getLogger(__name__)
router = APIRouter()
TOLERANCE_S = 300
PAID = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
REFUNDS = ("refund.created", "refund.updated")


@router.post("/webhooks/stripe")
async def stripe_webhook(request: Request) -> dict[str, Any]:
    async def verified() -> dict[str, Any]:
        body, secret = await signed_body(request, "stripe_webhook_secret")
        try:
            event = stripe.Webhook.construct_event(body, request.headers.get("stripe-signature"), secret,
                                                   tolerance=TOLERANCE_S)
        except stripe.SignatureVerificationError as exc:
            # The exception holds the body: only its first line is logged.
            log.warning("stripe webhook refused: %s (%d-byte body not parsed)", str(exc).split(".")[0], len(body))
            raise Refused(400, "missing, wrong or stale Stripe-Signature", "bad_signature") from None
        except ValueError:  # signed, but not UTF-8 JSON of an event
            raise Refused(400, "body is not a JSON event", "not_json") from None
        return event.to_dict()

    return await relay.webhook("stripe", verified, handle)


def handle(event: dict[str, Any]) -> relay.Answer:
    kind = event.get("type")
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    obj = data.get("object") if isinstance(data.get("object"), dict) else {}
    if kind in PAID and (kind != PAID[0] or obj.get("payment_status") == "paid"):
        return relay.send("stripe", kind, publish_payment, payment(event, obj),
                          "client_reference_id or metadata.user_id")
    if kind in REFUNDS and obj.get("status") == "succeeded":
        return relay.send("stripe", kind, publish_refund, refund(event, obj), "nothing: it is the payment's")
    return relay.ignored("stripe", kind)


def payment(event: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
    metadata = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
    return {"provider": "stripe", "reference": _id(session.get("payment_intent")) or session.get("id"),
            "user_id": session.get("client_reference_id") or metadata.get("user_id"),
            "amount_minor": session.get("amount_total"), "currency": _upper(session.get("currency")),
            "paid_at": _when(event.get("created"))}


def refund(event: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    return {"provider": "stripe", "refund_reference": obj.get("id"),
            "payment_reference": _id(obj.get("payment_intent")) or _id(obj.get("charge")),
            "amount_minor": obj.get("amount"), "currency": _upper(obj.get("currency")),
            "refunded_at": _when(event.get("created"))}


def _id(value: Any) -> Any:
    """An id, or the id of an expanded object."""
    return value.get("id") if isinstance(value, dict) else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _when(created: Any) -> Any:
    if isinstance(created, int) and not isinstance(created, bool):
        return datetime.fromtimestamp(created, UTC).isoformat()
    return created
