"""Adjustments, promo codes and credit expiry end to end against the real proxy: max_budget follows."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from tests.fixtures import wait_for
from tests.real.test_real_events import _max_budget, _signup
from worker.cli.main import app
from worker.credits.expiry import expire_due
from worker.db import session_scope
from worker.producer import publish_adjustment, publish_redeem, publish_signup
from worker.settings import get_settings

pytestmark = pytest.mark.real_proxy
runner = CliRunner()


def test_adjustments_and_a_promo_code_move_max_budget_on_the_real_proxy(real_env, workers):
    workers.start(env=real_env)
    user = f"u-{uuid.uuid4().hex[:8]}"
    _signup(user)
    assert _max_budget(user) == Decimal("2")
    publish_adjustment({"user_id": user, "amount_usd": "3.25", "reason": "outage", "reference": f"a-{user}",
                        "actor": "e2e", "occurred_at": datetime.now(UTC).isoformat()})
    wait_for(lambda: _max_budget(user) == Decimal("5.25"), 60, "max_budget 5.25 after the adjustment event")
    # The CLI goes through the same service in this process, against the same proxy.
    result = runner.invoke(app, ["adjust", user, "-1.25", "--reason", "correction", "--reference", f"b-{user}"])
    assert result.exit_code == 0, result.output
    assert _max_budget(user) == Decimal("4")
    made = runner.invoke(app, ["codes", "create", "--amount-usd", "5", "--max-uses", "1", "--json"])
    (code,) = [m["code"] for m in json.loads(made.stdout)]
    publish_redeem({"user_id": user, "code": code, "redeemed_at": datetime.now(UTC).isoformat()})
    wait_for(lambda: _max_budget(user) == Decimal("9"), 60, "max_budget 9 after the promo code")


def test_expired_signup_credit_lowers_max_budget_on_the_real_proxy(real_env, workers, monkeypatch):
    env = {**real_env, "SIGNUP_CREDIT_EXPIRES_DAYS": "1"}
    workers.start(env=env)
    user = f"u-{uuid.uuid4().hex[:8]}"
    signed_up = datetime.now(UTC) - timedelta(days=2)
    publish_signup({"user_id": user, "occurred_at": signed_up.isoformat()})
    wait_for(lambda: _max_budget(user) == Decimal("2"), 60, "the key with its 2 USD grant")
    monkeypatch.setenv("SIGNUP_CREDIT_EXPIRES_DAYS", "1")
    get_settings.cache_clear()
    with session_scope() as session:  # the spend sync has read up to now
        session.execute(text("INSERT INTO spend_sync_cursor (position, origin) VALUES (now(), :o) "
                             "ON CONFLICT (id) DO UPDATE SET position = now()"), {"o": signed_up})
    assert expire_due().expired == {f"signup:{user}": Decimal(2)}
    assert _max_budget(user) == Decimal(0)
