"""Stripe's webhooks through a real serve, signed as Stripe signs and checked by the official package."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import pytest

from tests.door.conftest import SIGNING_SECRET, STRIPE_SECRET, queued, stripe_post
from worker import signing

CREATED = int(datetime(2026, 11, 18, tzinfo=UTC).timestamp())


def session_event(kind: str = "checkout.session.completed", **session: object) -> dict:
    """An Event wrapping a Checkout Session, as the API reference shapes them."""
    obj = {"id": "cs_test_a1b2c3", "object": "checkout.session", "amount_subtotal": 1500, "amount_total": 1500,
           "client_reference_id": "ada", "created": CREATED - 60, "currency": "usd", "customer": "cus_Q1",
           "customer_details": {"email": "ada@example.com"}, "livemode": False,
           "metadata": {}, "mode": "payment", "payment_intent": "pi_3Q1", "payment_status": "paid",
           "status": "complete", **session}
    return {"id": "evt_1Q1", "object": "event", "api_version": "2025-03-31.basil", "created": CREATED,
            "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "type": kind}


def refund_event(kind: str = "refund.created", status: str = "succeeded", refund_id: str = "re_3Q1") -> dict:
    obj = {"id": refund_id, "object": "refund", "amount": 500, "balance_transaction": "txn_1", "charge": "ch_3Q1",
           "created": CREATED + 3600, "currency": "usd", "metadata": {}, "payment_intent": "pi_3Q1",
           "reason": "requested_by_customer", "status": status}
    return {"id": "evt_2Q1", "object": "event", "api_version": "2025-03-31.basil", "created": CREATED + 3600,
            "data": {"object": obj}, "livemode": False, "pending_webhooks": 1, "type": kind}


def only_event() -> dict:
    (message,) = queued()
    assert signing.verify(message["event"], SIGNING_SECRET) is None
    return {k: v for k, v in message["event"].items() if k != "signature"}


def test_a_paid_checkout_is_queued_as_a_payment(door):
    answer = stripe_post(door, session_event())
    assert answer.status_code == 200 and answer.json()["status"] == "queued"
    assert only_event() == {"provider": "stripe", "reference": "pi_3Q1", "user_id": "ada", "amount_minor": 1500,
                            "currency": "USD", "paid_at": "2026-11-18T00:00:00Z"}


def test_an_async_payment_falls_back_to_metadata_and_the_session_id(door):
    event = session_event("checkout.session.async_payment_succeeded", client_reference_id=None,
                          metadata={"user_id": "bob"}, payment_intent=None)
    assert stripe_post(door, event).status_code == 200
    event = only_event()
    assert (event["user_id"], event["reference"]) == ("bob", "cs_test_a1b2c3")


def test_an_unpaid_checkout_is_acknowledged_and_ignored(door):
    answer = stripe_post(door, session_event(payment_status="unpaid"))
    assert answer.status_code == 200 and answer.json() == {"status": "ignored"}
    assert queued() == []


def test_a_paid_checkout_naming_no_user_is_a_dead_letter(door):
    answer = stripe_post(door, session_event(client_reference_id=None))
    assert answer.status_code == 200 and answer.json()["status"] == "dead_letter"
    assert queued() == []


@pytest.mark.parametrize("kind", ["refund.created", "refund.updated"])
def test_a_succeeded_refund_is_queued_against_its_payment_intent(door, kind):
    assert stripe_post(door, refund_event(kind)).status_code == 200
    assert only_event() == {"provider": "stripe", "refund_reference": "re_3Q1", "payment_reference": "pi_3Q1",
                            "amount_minor": 500, "currency": "USD", "refunded_at": "2026-11-18T01:00:00Z"}


@pytest.mark.parametrize(("kind", "status"), [("refund.created", "pending"), ("refund.updated", "failed"),
                                              ("charge.refunded", "succeeded")])
def test_refunds_not_succeeded_and_charge_refunded_are_ignored(door, kind, status):
    assert stripe_post(door, refund_event(kind, status)).json() == {"status": "ignored"}
    assert queued() == []


def test_a_stale_signature_is_refused(door):
    assert stripe_post(door, session_event(), at=int(time.time()) - 301).status_code == 400
    assert queued() == []


def test_a_wrong_secret_or_no_signature_is_refused(door):
    assert stripe_post(door, session_event(), secret=STRIPE_SECRET + "x").status_code == 400
    assert door.http.post("/webhooks/stripe", json=session_event()).status_code == 400
    assert queued() == []
    metrics = door.http.get("/metrics").text
    assert 'credits_webhooks_total{outcome="bad_signature",provider="stripe"}' in metrics


def sign_by_hand(body: str, secret: str, at: int) -> str:
    """The documented scheme, without the package: v1 = hex HMAC-SHA256 of "<t>.<body>"."""
    return hmac.new(secret.encode(), f"{at}.{body}".encode(), hashlib.sha256).hexdigest()


def test_a_signature_made_by_the_documented_scheme_is_accepted_among_rotated_ones(door):
    body, at = json.dumps(session_event()), int(time.time())
    header = f"t={at},v1={sign_by_hand(body, 'whsec_old', at)},v1={sign_by_hand(body, STRIPE_SECRET, at)}"
    answer = door.http.post("/webhooks/stripe", content=body.encode(), headers={"stripe-signature": header})
    assert answer.status_code == 200 and len(queued()) == 1


def test_a_refused_stripe_body_is_not_logged(door):
    marker = "do-not-log-this-stripe-body-4c2a"
    answer = stripe_post(door, session_event(client_reference_id=marker), secret="whsec_wrong")
    assert answer.status_code == 400 and queued() == []
    assert marker not in door.output() and STRIPE_SECRET not in door.output()
