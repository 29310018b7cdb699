"""Paystack's webhooks through a real serve: verified before parsing, mapped, queued signed, 200
only once queued; what cannot be credited is a dead letter naming its reference."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from tests.door.conftest import PAYSTACK_SECRET, SIGNING_SECRET, paystack_post, queued
from worker import signing
from worker.db import session_scope
from worker.models import DeadLetter

MARKER = "do-not-log-this-body-7d1e"


def charge(reference: str = "T685312322670591", metadata: object = None, amount: int = 1000) -> dict:
    """charge.success as Paystack's published example shapes it."""
    return {"event": "charge.success", "data": {
        "id": 302961, "domain": "live", "status": "success", "reference": reference, "amount": amount,
        "message": None, "gateway_response": "Approved by Financial Institution", "paid_at": "2026-11-20T10:42:20.000Z",
        "created_at": "2026-11-20T10:42:03.000Z", "channel": "card", "currency": "USD", "ip_address": "41.242.49.37",
        "metadata": {"user_id": "ada"} if metadata is None else metadata, "fees": 15,
        "customer": {"id": 68324, "first_name": "Ada", "last_name": None, "email": "ada@example.com",
                     "customer_code": "CUS_qo38as2hpsgk2r0", "phone": None, "metadata": None,
                     "risk_action": "default"},
        "authorization": {"authorization_code": "AUTH_f5rnfq9p", "bin": "539999", "last4": "8877",
                          "exp_month": "08", "exp_year": "2030", "card_type": "mastercard DEBIT",
                          "bank": "Guaranty Trust Bank", "country_code": "NG", "brand": "mastercard"},
        "plan": {}}}


def refund_processed(reference: str = "T685312322670591", amount: str = "1000") -> dict:
    """refund.processed as Paystack's published example shapes it: amount a string, no user, no time."""
    return {"event": "refund.processed", "data": {
        "status": "processed", "transaction_reference": reference, "refund_reference": "1234567890",
        "amount": amount, "currency": "USD", "processor": "mpgs_zen",
        "customer": {"first_name": "Ada", "last_name": None, "email": "ada@example.com"},
        "integration": 463433, "domain": "live"}}


def letters() -> list[DeadLetter]:
    with session_scope() as session:
        return list(session.execute(select(DeadLetter).order_by(DeadLetter.id)).scalars())


@pytest.mark.parametrize("metadata", [{"user_id": "ada", "cart_id": 398}, json.dumps({"user_id": "ada"})],
                         ids=["object", "json-string"])
def test_charge_success_is_queued_as_a_signed_payment(door, metadata):
    answer = paystack_post(door, charge(metadata=metadata))
    assert answer.status_code == 200 and answer.json()["status"] == "queued"
    (message,) = queued()
    assert message["task"] == "events.payment"
    event = message["event"]
    assert {k: v for k, v in event.items() if k != "signature"} == {
        "provider": "paystack", "reference": "T685312322670591", "user_id": "ada", "amount_minor": 1000,
        "currency": "USD", "paid_at": "2026-11-20T10:42:20Z"}
    assert signing.verify(event, SIGNING_SECRET) is None
    assert answer.json()["task_id"]


@pytest.mark.parametrize("metadata", [0, {"cart_id": 398}, "", "not json"], ids=["zero", "no-user", "empty", "junk"])
def test_a_charge_naming_no_user_is_a_dead_letter_naming_its_reference(door, metadata):
    answer = paystack_post(door, charge("T-NOUSER-1", metadata=metadata))
    assert answer.status_code == 200 and answer.json()["status"] == "dead_letter"
    assert queued() == []
    (letter,) = letters()
    assert letter.id == answer.json()["dead_letter_id"] and letter.status == "open"
    assert "'T-NOUSER-1'" in letter.reason and "names no user" in letter.reason
    assert json.loads(letter.payload)["amount_minor"] == 1000


def test_refund_processed_is_queued_with_its_string_amount_converted_and_no_user(door):
    answer = paystack_post(door, refund_processed(amount="5000"))
    assert answer.status_code == 200
    (message,) = queued()
    event = message["event"]
    assert message["task"] == "events.refund" and "user_id" not in event
    assert event["amount_minor"] == 5000 and event["payment_reference"] == "T685312322670591"
    assert event["refund_reference"] == "1234567890" and event["refunded_at"]  # the time of receipt
    assert signing.verify(event, SIGNING_SECRET) is None


def test_a_charge_without_paid_at_is_dated_by_its_receipt(door):
    delivery = charge()
    del delivery["data"]["paid_at"]
    assert paystack_post(door, delivery).status_code == 200
    (message,) = queued()
    assert message["event"]["paid_at"].startswith(str(datetime.now(UTC).year))


def test_other_event_types_are_acknowledged_ignored_and_counted(door):
    answer = paystack_post(door, {"event": "transfer.success", "data": {"reference": "x"}})
    assert answer.status_code == 200 and answer.json() == {"status": "ignored"}
    assert queued() == []
    assert 'credits_webhooks_total{outcome="ignored",provider="paystack"}' in door.http.get("/metrics").text


@pytest.mark.parametrize("signature", [None, "0" * 128, "not-hex"], ids=["missing", "wrong", "junk"])
def test_a_missing_or_wrong_signature_is_refused_before_parsing_and_nothing_is_queued(door, signature):
    body = json.dumps(charge(metadata={"user_id": MARKER})).encode()
    headers = {"content-type": "application/json"} | ({"x-paystack-signature": signature} if signature else {})
    answer = door.http.post("/webhooks/paystack", content=body, headers=headers)
    assert answer.status_code == 400
    assert queued() == [] and letters() == []
    assert MARKER not in door.output()


def test_signed_with_another_key_is_refused(door):
    assert paystack_post(door, charge(), secret=PAYSTACK_SECRET + "x").status_code == 400
    assert queued() == []


def test_a_signed_body_that_is_not_json_is_a_400(door):
    assert paystack_post(door, b"\x00not json{").status_code == 400
    assert queued() == []


def test_a_body_over_one_mebibyte_is_a_413(door):
    huge = charge(metadata={"user_id": "ada", "pad": "x" * (1024 * 1024)})
    assert paystack_post(door, huge).status_code == 413
    assert queued() == []


def test_secrets_never_appear_in_the_log(door):
    paystack_post(door, charge())
    paystack_post(door, charge(), secret="wrong")
    out = door.output()
    assert "queued" in out
    assert PAYSTACK_SECRET not in out and SIGNING_SECRET not in out
