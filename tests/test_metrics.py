"""Metrics: a real worker serves the money figures and proxy latency on METRICS_PORT."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from tests.conftest import _free_port
from tests.fixtures import wait_for
from worker.credits import ledger
from worker.db import session_scope
from worker.metrics import LedgerCollector
from worker.models import DeadLetter
from worker.producer import publish_payment, publish_signup

AT = "2026-11-20T10:00:00Z"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def pushed(user_id: str) -> Decimal | None:
    with session_scope() as session:
        b = ledger.balance(session, user_id)
        return b.budget_pushed_usd if b else None


def open_letters() -> int:
    with session_scope() as session:
        return session.query(DeadLetter).filter_by(status="open").count()


def has_table(name: str) -> bool:
    with session_scope() as session:
        return session.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": name}).scalar_one()


def test_worker_serves_money_figures_and_proxy_metrics(workers, proxy, tmp_path):
    port = _free_port()
    workers.start(env={"METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")})

    publish_signup({"user_id": "ann", "occurred_at": AT})
    wait_for(lambda: pushed("ann") == 2, 30, "ann's key pushed")
    # The proxy fails while bob signs up: the pool child's failed requests must reach the scrape.
    proxy.mode = "error"
    publish_signup({"user_id": "bob", "occurred_at": AT})
    wait_for(lambda: value(scrape(port), "credits_proxy_request_errors_total", endpoint="/key/generate"), 30,
             "a proxy error counted")
    proxy.mode = "ok"
    wait_for(lambda: pushed("bob") == 2, 30, "bob's key pushed after retries")
    publish_payment({"reference": "r-700", "user_id": "ann", "amount_minor": 700, "currency": "USD", "paid_at": AT})

    with session_scope() as session:
        ledger.record(session, user_id="ann", kind="usage", idempotency_key="usage:req-1",
                      occurred_at=datetime.now(UTC), spent=Decimal("0.75"))
        # A lost push: the proxy holds less than the ledger credited.
        session.execute(text("UPDATE accounts SET budget_pushed_usd = 1 WHERE user_id = 'bob'"))
        if has_table("spend_sync_cursor"):
            session.execute(text("INSERT INTO spend_sync_cursor (position, origin) "
                                 "VALUES (now() - interval '10 minutes', now() - interval '1 day')"))
        if has_table("spend_logs"):
            session.execute(text("INSERT INTO spend_logs (request_id, api_key, spend, start_time) "
                                 "VALUES ('req-1', 'abc', 0.75, now()), ('req-2', 'other', 0.1, now())"))
    wait_for(lambda: open_letters() == 1, 30, "the rejected payment dead-lettered")

    requests = proxy.requests["/key/generate"]
    samples = wait_for(
        lambda: (s := scrape(port)) and value(s, "credits_proxy_request_seconds_count", endpoint="/key/generate")
        == requests and s, 30, "every /key/generate request observed")
    errors = value(samples, "credits_proxy_request_errors_total", endpoint="/key/generate")
    assert errors == requests - 2  # all but the two that made the keys
    assert value(samples, "credits_metrics_db_up") == 1
    assert value(samples, "credits_usage_debited_usd_total") == 0.75
    assert value(samples, "credits_budget_drift_accounts") == 1
    assert value(samples, "credits_dead_letters_open", task="events.payment", reason="rejected") == 1
    if has_table("spend_logs"):
        assert value(samples, "credits_spend_rows_ingested_total") == 2
    if has_table("spend_sync_cursor"):
        assert value(samples, "credits_spend_sync_lag_seconds") >= 600


def test_scrape_answers_when_the_database_does_not():
    collector = LedgerCollector("postgresql+psycopg://postgres@127.0.0.1:1/none")
    families = {f.name: f for f in collector.collect()}
    assert [s.value for s in families["credits_metrics_db_up"].samples] == [0]
    assert list(families) == ["credits_metrics_db_up"]
