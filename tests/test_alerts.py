"""Balance alerts: each threshold crossing fires exactly once, and again only after a top-up."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from tasks.payment import payment, refund
from tasks.signup import signup
from tests.conftest import TEST_ENV
from tests.fixtures import wait_for
from worker.alerts import checks as alerts
from worker.alerts import stream as alert_stream
from worker.credits import keys, ledger
from worker.db import session_scope
from worker.models import Account, BalanceAlert
from worker.producer import publish_payment, publish_refund, publish_signup
from worker.settings import get_settings
from worker.spend import sync as spend_sync

USER = "dana@example.com"
AT = "2026-11-20T10:00:00Z"
PAYMENT = {"provider": "paystack", "reference": "pay-a1", "user_id": USER, "amount_minor": 500,
           "currency": "USD", "paid_at": AT}
REFUND = {"provider": "paystack", "refund_reference": "ref-a1", "payment_reference": "pay-a1", "user_id": USER,
          "amount_minor": 500, "currency": "USD", "refunded_at": AT}


def stream() -> list[dict[str, str]]:
    entries = redis.Redis.from_url(TEST_ENV["REDIS_URL"], decode_responses=True).xrange(alert_stream.STREAM)
    return [fields for _, fields in entries]


def spend(proxy, amount: float) -> None:
    """Usage the way it really arrives: a spend-log row on the proxy, read by the spend sync."""
    with session_scope() as session:
        key = keys.decrypt(session.get(Account, USER).key_encrypted)
    # Each request a few seconds after the last one read, as real traffic would be: a row filed
    # inside a range already read is a late row, found by a later verification instead.
    now = max(datetime.now(UTC), _clock[-1] + timedelta(seconds=10)) if _clock else datetime.now(UTC)
    _clock.append(now)
    proxy.add_spend(key, amount, now)
    spend_sync.sync(now=now + timedelta(seconds=get_settings().spend_settle_s + 5))


_clock: list[datetime] = []


def remaining() -> Decimal:
    with session_scope() as session:
        return ledger.balance(session, USER).remaining_usd


def test_each_crossing_fires_once_and_again_only_after_a_top_up(proxy):
    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": AT}})  # credited 2
    spend(proxy, 1.0)
    assert stream() == []  # 1.00 left: above 20% (0.40)
    spend(proxy, 0.7)
    assert [(a["threshold"], a["remaining_usd"]) for a in stream()] == [("20%", "0.3000000000")]
    spend(proxy, 0.1)
    alerts.check_alerts([USER])
    assert len(stream()) == 1  # still below, not re-armed: nothing new
    spend(proxy, 0.2)
    assert [a["threshold"] for a in stream()] == ["20%", "0"] and remaining() == 0
    payment.apply(kwargs={"event": PAYMENT})  # +10 credit: 10.00 left, both thresholds re-armed
    assert len(stream()) == 2
    spend(proxy, 9.7)  # 0.30 left of 12: below 20% (2.40) again
    refund.apply(kwargs={"event": REFUND})  # -10 credit: -9.70 left, below zero again
    fired = stream()
    assert [(a["threshold"], a["alert_id"]) for a in fired] == [
        ("20%", f"{USER}:20%:1"), ("0", f"{USER}:0:1"), ("20%", f"{USER}:20%:2"), ("0", f"{USER}:0:2")]
    assert fired[3]["remaining_usd"] == "-9.7000000000" and fired[3]["credited_usd"] == "2.0000000000"
    assert all(a["user_id"] == USER and datetime.fromisoformat(a["at"]).tzinfo for a in fired)


def test_concurrent_checks_of_one_crossing_fire_it_once(proxy):
    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": AT}})
    with session_scope() as session:
        ledger.record(session, user_id=USER, kind="usage", idempotency_key="spend:r1",
                      occurred_at=datetime.now(UTC), spent=Decimal("1.9"))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: alerts.check_alerts([USER]), range(8)))
    assert sum(len(r) for r in results) == 1
    assert [a["threshold"] for a in stream()] == ["20%"]


def test_alert_fired_while_redis_is_down_is_delivered_by_the_next_check(proxy, monkeypatch):
    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": AT}})
    with session_scope() as session:
        ledger.record(session, user_id=USER, kind="usage", idempotency_key="spend:r1",
                      occurred_at=datetime.now(UTC), spent=Decimal("2"))
    down = redis.Redis(port=1, socket_connect_timeout=1)
    monkeypatch.setattr(alert_stream, "client", lambda: down)
    assert len(alerts.check_alerts([USER])) == 2  # fired (20% and 0) ...
    assert stream() == []  # ... but not delivered
    with session_scope() as session:
        assert session.query(BalanceAlert).filter(BalanceAlert.pending.is_not(None)).count() == 2
    monkeypatch.undo()
    assert alerts.check_alerts([USER]) == []  # the next check: nothing new, the pending two go out
    assert sorted(a["threshold"] for a in stream()) == ["0", "20%"]
    assert alerts.check_alerts([USER]) == [] and len(stream()) == 2  # still below: not re-fired


def test_thresholds_come_from_settings(proxy, monkeypatch, capsys):
    monkeypatch.setenv("ALERT_THRESHOLDS", "50%, 1.5")
    get_settings.cache_clear()
    assert [(t.label, t.level(Decimal(4))) for t in get_settings().alert_thresholds] == [
        ("50%", 2), ("1.5", Decimal("1.5"))]
    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": AT}})
    with session_scope() as session:
        ledger.record(session, user_id=USER, kind="usage", idempotency_key="spend:r1",
                      occurred_at=datetime.now(UTC), spent=Decimal("0.6"))
    assert [a["threshold"] for a in alerts.check_alerts([USER])] == ["1.5"]  # 1.40 left of 2
    for bad in ("abc", "120%", "-5%"):
        monkeypatch.setenv("ALERT_THRESHOLDS", bad)
        get_settings.cache_clear()
        with pytest.raises(SystemExit):
            get_settings()
        assert "ALERT_THRESHOLDS" in capsys.readouterr().err


class Receiver:
    """A webhook endpoint that fails its first request, then accepts."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.posts.append((self.headers["Idempotency-Key"], body))
                self.send_response(503 if len(receiver.posts) == 1 else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_real_worker_posts_alerts_with_retries_from_spend_and_refund(workers, proxy, monkeypatch):
    hook = Receiver()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", hook.url)  # the spend sync runs here and queues the POST
    get_settings.cache_clear()
    workers.start(env={"ALERT_WEBHOOK_URL": hook.url})
    try:
        publish_signup({"user_id": USER, "occurred_at": AT})
        wait_for(lambda: proxy.key_by_alias(f"test-{USER}"), 30, "the key")
        spend(proxy, 1.9)  # 0.10 left: the 20% alert
        wait_for(lambda: len(hook.posts) == 2, 30, "the alert POSTed, once refused and once accepted")
        assert hook.posts[0] == hook.posts[1] and hook.posts[0][0] == f"{USER}:20%:1"
        publish_payment(PAYMENT)  # top-up re-arms it ...
        wait_for(lambda: remaining() == Decimal("10.1"), 30, "the top-up")
        publish_refund(REFUND)  # ... and the refund takes the balance below 20% again
        wait_for(lambda: len(hook.posts) == 3, 30, "the second alert POSTed")
        assert hook.posts[2][0] == f"{USER}:20%:2" and hook.posts[2][1]["remaining_usd"] == "0.1000000000"
        assert [a["alert_id"] for a in stream()] == [f"{USER}:20%:1", f"{USER}:20%:2"]
    finally:
        hook.server.shutdown()
