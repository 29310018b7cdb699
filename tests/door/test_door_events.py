"""The web app's events over HTTP: bearer tokens (rotated), validation naming the field, signed and queued."""

from __future__ import annotations

import pytest

from tests.door.conftest import NEW_TOKEN, OLD_TOKEN, SIGNING_SECRET, auth, queued
from worker import signing

PAYMENT = {"provider": "paystack", "reference": "T1", "user_id": "ada", "amount_minor": 500, "currency": "USD",
           "paid_at": "2026-11-20T11:00:00Z"}


@pytest.mark.parametrize("token", [OLD_TOKEN, NEW_TOKEN], ids=["old", "new"])
def test_an_event_is_signed_and_queued_with_either_token(door, token):
    answer = door.http.post("/v1/events/payment", json=PAYMENT, headers=auth(token))
    assert answer.status_code == 202
    (message,) = queued()
    assert answer.json() == {"task_id": answer.json()["task_id"]} and message["task"] == "events.payment"
    assert signing.verify(message["event"], SIGNING_SECRET) is None


def test_a_signup_goes_to_the_signups_queue(door):
    answer = door.http.post("/v1/events/signup", json={"user_id": "ada", "email": "ada@example.com",
                                                       "occurred_at": "2026-11-20T10:00:00Z"}, headers=auth())
    assert answer.status_code == 202 and queued("signups")[0]["task"] == "events.signup"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": NEW_TOKEN},
                                     {"Authorization": f"Basic {NEW_TOKEN}"}],
                         ids=["none", "wrong", "no-scheme", "basic"])
def test_no_token_or_a_wrong_one_is_a_401_and_nothing_is_queued(door, headers):
    assert door.http.post("/v1/events/payment", json=PAYMENT, headers=headers).status_code == 401
    assert door.http.get("/v1/accounts/ada", headers=headers).status_code == 401
    assert queued() == []


def test_an_invalid_event_is_a_422_naming_the_field_and_why(door):
    answer = door.http.post("/v1/events/payment", json={**PAYMENT, "amount_minor": "500"}, headers=auth())
    assert answer.status_code == 422
    (field,) = answer.json()["fields"]
    assert field["field"] == "amount_minor" and "JSON integer" in field["reason"]
    answer = door.http.post("/v1/events/payment", json={k: v for k, v in PAYMENT.items() if k != "user_id"},
                            headers=auth())
    assert answer.status_code == 422 and answer.json()["fields"] == [{"field": "user_id", "reason": "Field required"}]
    assert queued() == []


def test_not_json_is_a_400_and_an_unknown_kind_a_404(door):
    assert door.http.post("/v1/events/payment", content=b"{nope", headers=auth()).status_code == 400
    assert door.http.post("/v1/events/mint", json=PAYMENT, headers=auth()).status_code == 404
    assert queued() == []


def test_tokens_never_appear_in_the_log(door):
    door.http.post("/v1/events/payment", json=PAYMENT, headers=auth())
    door.http.post("/v1/events/payment", json=PAYMENT, headers=auth(NEW_TOKEN + "x"))
    out = door.output()
    assert NEW_TOKEN not in out and OLD_TOKEN not in out and SIGNING_SECRET not in out
