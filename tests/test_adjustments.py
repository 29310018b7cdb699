"""Manual adjustments: either sign, once per reference, never below what is spent unless forced."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tasks.credit_tools import adjustment
from tasks.signup import signup
from tests.fixtures import wait_for
from worker import signing
from worker.cli.main import app
from worker.credits import ledger
from worker.db import session_scope
from worker.models import DeadLetter, LedgerEntry
from worker.producer import publish_adjustment
from worker.settings import get_settings

USER = "carol@example.com"
ALIAS = f"test-{USER}"
SECRET = "s3cret-adjustments-test-0123456789abcdef"  # 32 bytes or more, or settings refuse it
runner = CliRunner()


def event(reference: str = "adj-1", amount: str = "3.50", **fields: Any) -> dict[str, Any]:
    return {"user_id": USER, "amount_usd": amount, "reason": "outage compensation", "reference": reference,
            "actor": "ops-ann", "occurred_at": "2026-11-22T10:00:00Z", **fields}


def cli(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.output)
    return result


def credited() -> Decimal:
    with session_scope() as session:
        return ledger.credited_total(session, USER)


def adjustments() -> list[LedgerEntry]:
    with session_scope() as session:
        return list(session.execute(select(LedgerEntry).where(LedgerEntry.kind == "adjustment")).scalars())


def reasons() -> list[str]:
    with session_scope() as session:
        return list(session.execute(select(DeadLetter.reason).order_by(DeadLetter.id)).scalars())


def spend(amount: str, request_id: str = "r1") -> None:
    with session_scope() as session:
        ledger.record(session, user_id=USER, kind="usage", idempotency_key=f"spend:{request_id}",
                      spent=Decimal(amount), occurred_at=datetime.now(UTC))


@pytest.fixture
def account(proxy):
    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": "2026-11-20T10:00:00Z"}})
    assert proxy.key_by_alias(ALIAS)["max_budget"] == 2


def test_positive_then_negative_adjustment_move_the_total_and_the_budget(account, proxy):
    adjustment.apply(kwargs={"event": event()})
    assert credited() == Decimal("5.5") and proxy.key_by_alias(ALIAS)["max_budget"] == 5.5
    adjustment.apply(kwargs={"event": event("adj-2", "-1.25")})
    assert credited() == Decimal("4.25") and proxy.key_by_alias(ALIAS)["max_budget"] == 4.25
    first = adjustments()[0]
    assert first.idempotency_key == "adjustment:adj-1" and first.grant_key == "adjustment:adj-1"
    assert first.details == {"reason": "outage compensation", "actor": "ops-ann", "reference": "adj-1",
                             "forced": False}
    assert not reasons()


def test_same_adjustment_twice_changes_nothing_and_a_reused_reference_is_refused(account, proxy):
    for _ in range(2):
        adjustment.apply(kwargs={"event": event()})
    assert len(adjustments()) == 1 and credited() == Decimal("5.5")
    adjustment.apply(kwargs={"event": event(amount="9")})
    assert credited() == Decimal("5.5")
    assert reasons() == ["adjustment reference 'adj-1' was already used for another adjustment "
                         "(3.5000000000 USD to 'carol@example.com')"]


def test_negative_adjustment_stops_at_what_is_spent_unless_forced(account, proxy):
    spend("1.5")
    adjustment.apply(kwargs={"event": event("adj-down", "-0.5")})  # 2 - 0.5 = 1.5: exactly spent, allowed
    assert credited() == Decimal("1.5")
    adjustment.apply(kwargs={"event": event("adj-more", "-0.01")})
    assert reasons() == ["adjustment of -0.0100000000 USD would lower the credited total to 1.4900000000 USD, "
                         "below the 1.5000000000 USD already spent (use --force to apply it anyway)"]
    assert credited() == Decimal("1.5")
    out = json.loads(cli("adjust", USER, "-0.01", "--reason", "fraud", "--reference", "adj-more", "--force",
                         "--json").stdout)
    assert out["applied"] == "now" and out["credited_usd"] == out["budget_pushed_usd"] == "1.4900000000"
    assert proxy.key_by_alias(ALIAS)["max_budget"] == 1.49
    assert adjustments()[-1].details["forced"] is True


def test_unknown_user_and_bad_fields_are_dead_lettered(proxy):
    adjustment.apply(kwargs={"event": event()})
    adjustment.apply(kwargs={"event": event(amount="0")})
    adjustment.apply(kwargs={"event": event(amount=1.5)})
    assert reasons()[0] == "no account for user 'carol@example.com'"
    assert "amount_usd" in reasons()[1] and "must not be zero" in reasons()[1]
    assert "amount_usd" in reasons()[2]  # a JSON number is refused: amounts travel as decimal strings


def test_signed_when_signing_is_on(account, proxy, monkeypatch):
    monkeypatch.setenv("EVENT_SIGNING_SECRET", SECRET)
    get_settings.cache_clear()
    adjustment.apply(kwargs={"event": event()})
    assert reasons() == ["missing signature (EVENT_SIGNING_SECRET is set, so payments, refunds, adjustments and "
                         "redemptions must be signed)"]
    body = event("adj-signed")
    adjustment.apply(kwargs={"event": {**body, "signature": signing.sign(body, SECRET)}})
    assert [e.idempotency_key for e in adjustments()] == ["adjustment:adj-signed"]


def test_cli_adjust_is_idempotent_and_the_ledger_shows_reason_and_actor(account, proxy):
    args = ("adjust", USER, "-0.5", "--reason", "double charge", "--reference", "T-9", "--actor", "bob")
    assert "now" in cli(*args).stdout
    assert "already" in cli(*args).stdout
    assert credited() == Decimal("1.5") and proxy.key_by_alias(ALIAS)["max_budget"] == 1.5
    rows = json.loads(cli("ledger", USER, "--json").stdout)
    assert [(r["kind"], r["reason"], r["actor"]) for r in rows] == [
        ("adjustment", "double charge", "bob"), ("grant", None, None)]
    refused = cli("adjust", USER, "-5", "--reason", "x", "--reference", "T-10", code=1)
    assert refused.stderr.startswith("error: refused: adjustment of -5.0000000000 USD would lower")
    bad = cli("adjust", USER, "abc", "--reason", "x", "--reference", "T-11", code=1)
    assert "invalid adjustment: amount_usd" in bad.stderr


def test_cli_adjust_of_an_unknown_user_is_refused_in_one_line(proxy):
    result = cli("adjust", "nobody", "5", "--reason", "x", "--reference", "T-1", code=1)
    assert result.stderr.strip() == "error: refused: no account for user 'nobody'"


def test_published_adjustment_through_a_real_worker(account, workers, proxy, monkeypatch):
    monkeypatch.setenv("EVENT_SIGNING_SECRET", SECRET)
    get_settings.cache_clear()
    workers.start(env={"EVENT_SIGNING_SECRET": SECRET})
    ids = [publish_adjustment(event()) for _ in range(2)]
    wait_for(lambda: all(f"[{i}] succeeded" in workers.output() for i in ids), 60, "both deliveries handled")
    assert len(adjustments()) == 1 and proxy.key_by_alias(ALIAS)["max_budget"] == 5.5 and not reasons()
