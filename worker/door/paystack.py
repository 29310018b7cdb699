"""POST /webhooks/paystack: charge.success -> events.payment, refund.processed -> events.refund.

x-paystack-signature is the hex HMAC-SHA512 of the raw body keyed with the secret key; it is
checked before the body is parsed. Paystack retries anything but a 200 for up to 72 hours.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from worker.door import relay
from worker.door.body import Refused, json_object, signed_body
from worker.producer import publish_payment, publish_refund

log = logging.getLogger(__name__)
router = APIRouter()


@router.post("/webhooks/paystack")
async def paystack(request: Request) -> dict[str, Any]:
    async def verified() -> dict[str, Any]:
        body, secret = await signed_body(request, "paystack_secret_key")
        given = request.headers.get("x-paystack-signature", "")
        expected = hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.strip().lower().encode("latin-1", "replace")):
            log.warning("paystack webhook refused: %s signature (%d-byte body not parsed)",
                        "wrong" if given else "no", len(body))
            raise Refused(400, "missing or wrong x-paystack-signature", "bad_signature")
        return json_object(body)

    return await relay.webhook("paystack", verified, handle)


def handle(payload: dict[str, Any]) -> relay.Answer:
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    kind = payload.get("event")
    if kind == "charge.success":
        return relay.send("paystack", "charge.success", publish_payment, payment(data), "metadata.user_id")
    if kind == "refund.processed":
        return relay.send("paystack", "refund.processed", publish_refund, refund(data), "nothing: it is the payment's")
    return relay.ignored("paystack", kind)


def payment(data: dict[str, Any]) -> dict[str, Any]:
    return {"provider": "paystack", "reference": data.get("reference"), "user_id": user_of(data.get("metadata")),
            "amount_minor": minor_units(data.get("amount")), "currency": data.get("currency"),
            # paid_at in the published examples; older payloads spell it paidAt. Money was received
            # either way: with neither, the time of receipt dates it rather than a dead letter.
            "paid_at": data.get("paid_at") or data.get("paidAt") or datetime.now(UTC).isoformat()}


def refund(data: dict[str, Any]) -> dict[str, Any]:
    # No user id here: the worker takes the payment's. No time either: the time of receipt.
    transaction = data.get("transaction") if isinstance(data.get("transaction"), dict) else {}
    return {"provider": "paystack", "refund_reference": data.get("refund_reference"),
            "payment_reference": data.get("transaction_reference") or transaction.get("reference"),
            "amount_minor": minor_units(data.get("amount")), "currency": data.get("currency"),
            "refunded_at": data.get("refunded_at") or datetime.now(UTC).isoformat()}


def user_of(metadata: Any) -> str | None:
    """metadata.user_id, where metadata is an object, a JSON-encoded object, or 0 (none set)."""
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return None
    if not isinstance(metadata, dict):
        return None
    user = metadata.get("user_id")
    if isinstance(user, bool) or not isinstance(user, (str, int)):
        return None
    return str(user)


def minor_units(amount: Any) -> Any:
    """Paystack sends a refund's amount as a string ("5000") and a charge's as an integer; digits are
    taken either way, anything else is left for validation (and a dead letter)."""
    if isinstance(amount, str) and amount.isascii() and amount.isdigit():
        return int(amount)
    return amount
