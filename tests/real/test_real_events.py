"""Signups and payments end to end against the real proxy: the key exists, its budget really rises."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.fixtures import wait_for
from tests.real.conftest import chat
from worker import proxy as client
from worker.credits import keys
from worker.db import session_scope
from worker.models import Account
from worker.producer import publish_payment, publish_signup

pytestmark = pytest.mark.real_proxy


def _key_of(user_id: str) -> str | None:
    with session_scope() as session:
        account = session.get(Account, user_id)
        return keys.decrypt(account.key_encrypted) if account and account.key_status == "active" else None


def _max_budget(user_id: str) -> Decimal | None:
    key = _key_of(user_id)
    return client.key_info(keys.key_hash(key)).info.max_budget if key else None


def _signup(user_id: str) -> str:
    publish_signup({"user_id": user_id, "occurred_at": datetime.now(UTC).isoformat()})
    return wait_for(lambda: _key_of(user_id), 60, "the key to be provisioned")


def _pay(user_id: str, amount_minor: int = 500) -> None:
    publish_payment({"reference": f"ref-{uuid.uuid4().hex}", "user_id": user_id, "amount_minor": amount_minor,
                     "currency": "USD", "paid_at": datetime.now(UTC).isoformat()})


def test_signup_makes_a_working_key_with_2_usd(real_env, workers):
    workers.start(env=real_env)
    user = f"u-{uuid.uuid4().hex[:8]}"
    key = _signup(user)
    assert _max_budget(user) == Decimal("2")
    response = chat(key)
    assert response.status_code == 200, response.text


def test_payment_raises_max_budget_and_lifts_the_budget_error(real_env, workers):
    workers.start(env=real_env)
    user = f"u-{uuid.uuid4().hex[:8]}"
    key = _signup(user)
    # Spend the 2 USD starting credit until the proxy refuses with its budget error.
    for _ in range(400):
        response = chat(key, model="fake-gpt-2")
        if response.status_code != 200:
            break
    assert response.status_code in (400, 401, 422, 429) and "budget" in response.text.lower(), response.text
    _pay(user)
    wait_for(lambda: _max_budget(user) == Decimal("12"), 60, "max_budget 12 on the proxy")
    assert chat(key, model="fake-gpt-2").status_code == 200
