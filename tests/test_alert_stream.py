"""Alert delivery onto the Redis stream, against fakeredis: what a consumer of credits.alerts reads."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import fakeredis
import pytest

from tasks.signup import signup
from worker.alerts import checks, stream
from worker.credits import ledger
from worker.db import session_scope
from worker.models import BalanceAlert

USER = "erin@example.com"


@pytest.fixture
def fake_redis(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    server = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(stream, "client", lambda: server)
    return server


def spend(amount: str, request_id: str) -> None:
    with session_scope() as session:
        ledger.record(session, user_id=USER, kind="usage", idempotency_key=f"spend:{request_id}",
                      occurred_at=datetime.now(UTC), spent=Decimal(amount))


def test_a_fired_alert_reaches_the_stream_once_with_its_figures(proxy, fake_redis):
    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": "2026-11-20T10:00:00Z"}})
    spend("1.7", "r1")  # 0.30 of 2.00 left: below 20%
    fired = checks.check_alerts([USER])
    assert [a["threshold"] for a in fired] == ["20%"]
    [(_, alert)] = fake_redis.xrange(stream.STREAM)
    assert alert == fired[0] and alert["alert_id"] == f"{USER}:20%:1"
    figures = {name: Decimal(alert[name]) for name in ("level_usd", "remaining_usd", "credited_usd")}
    assert figures == {"level_usd": Decimal("0.4"), "remaining_usd": Decimal("0.3"), "credited_usd": 2}
    assert stream.deliver() == 0 and len(fake_redis.xrange(stream.STREAM)) == 1  # nothing left pending
    with session_scope() as session:
        assert session.query(BalanceAlert).filter(BalanceAlert.pending.is_not(None)).count() == 0
