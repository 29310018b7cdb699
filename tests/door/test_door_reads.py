"""The dashboard's reads over HTTP: money as decimal strings, bounded pages, 404 for an unknown user."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from schemas.events import SignupEvent
from tests.door.conftest import auth
from tests.spend_helpers import BASE, account
from tests.standin.proxy import token
from worker.credits.signup import apply_signup
from worker.db import session_scope
from worker.spend.ingest import write_page
from worker.spend.rows import Row


@pytest.fixture
def dash():
    """dash: the signup grant, then 3 days x 2 models of usage, 2 calls of 0.1 USD each."""
    account("dash", "sk-dash")
    with session_scope() as session:
        apply_signup(session, SignupEvent(user_id="dash", occurred_at=BASE))
    for day in range(3):
        at = BASE + timedelta(days=day)
        rows = [Row(f"d{day}-{m}-{i}", token("sk-dash"), m, Decimal("0.1"), 10, 5, "success", at + timedelta(seconds=i))
                for m in ("gpt-a", "gpt-b") for i in range(2)]
        with session_scope() as session:
            write_page(session, rows)


def test_the_balance_has_money_as_decimal_strings(door, dash):
    body = door.http.get("/v1/accounts/dash", headers=auth()).json()
    for name in ("credited_usd", "paid_usd", "spent_usd", "remaining_usd", "savings_usd"):
        assert isinstance(body[name], str), name
    assert Decimal(body["credited_usd"]) == 2 and Decimal(body["spent_usd"]) == Decimal("1.2")
    assert Decimal(body["remaining_usd"]) == Decimal("0.8") and Decimal(body["savings_usd"]) == Decimal("1.2")
    assert body["user_id"] == "dash"


def test_usage_is_the_daily_usage_rows_of_the_range(door, dash):
    day = BASE.date()
    answer = door.http.get("/v1/accounts/dash/usage", headers=auth(),
                           params={"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()})
    rows = answer.json()["days"]
    next_day = (day + timedelta(days=1)).isoformat()
    assert [(r["day"], r["model"], r["requests"]) for r in rows] == [
        (day.isoformat(), "gpt-a", 2), (day.isoformat(), "gpt-b", 2), (next_day, "gpt-a", 2), (next_day, "gpt-b", 2)]
    assert set(rows[0]) == {"day", "model", "requests", "failed_requests", "prompt_tokens", "completion_tokens",
                            "spend_usd"}
    assert Decimal(rows[0]["spend_usd"]) == Decimal("0.2") and rows[0]["prompt_tokens"] == 20


def test_usage_refuses_a_bad_or_unbounded_range(door, dash):
    assert door.http.get("/v1/accounts/dash/usage", headers=auth(), params={"start": "20261120"}).status_code == 422
    assert door.http.get("/v1/accounts/dash/usage", headers=auth(),
                         params={"start": "2020-01-01", "end": "2026-01-01"}).status_code == 422


def test_the_ledger_pages_walk_every_entry_once_newest_first(door, dash):
    seen, before = [], None
    while True:
        params = {"limit": 5} | ({"before": before} if before else {})
        page = door.http.get("/v1/accounts/dash/ledger", headers=auth(), params=params).json()
        seen += page["entries"]
        before = page["next_before"]
        if before is None:
            break
    assert len(seen) == 13 and len({e["id"] for e in seen}) == 13  # the grant and 12 successful calls
    assert [e["occurred_at"] for e in seen] == sorted((e["occurred_at"] for e in seen), reverse=True)
    assert seen[-1]["kind"] == "grant" and seen[-1]["credit_usd"].startswith("2.")
    assert door.http.get("/v1/accounts/dash/ledger", headers=auth(), params={"limit": 10_000}).status_code == 422


@pytest.mark.parametrize("path", ["", "/usage", "/ledger"])
def test_an_unknown_user_is_a_404(door, path):
    assert door.http.get(f"/v1/accounts/nobody{path}", headers=auth()).status_code == 404


def test_healthz_answers_when_redis_and_postgres_do(door):
    answer = door.http.get("/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok", "redis": "ok", "postgres": "ok"}


def test_with_postgres_down_reads_are_503_and_webhooks_still_queue(tmp_path):
    from tests.conftest import _free_port
    from tests.door.conftest import Door, paystack_post, queued
    from tests.door.test_door_paystack import charge

    door = Door(tmp_path / "serve.log", {"DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/x"})
    try:
        answer = door.http.get("/v1/accounts/dash", headers=auth())
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert door.http.get("/healthz").json() == {"status": "down", "redis": "ok", "postgres": "down"}
        assert paystack_post(door, charge()).status_code == 200 and len(queued()) == 1
    finally:
        door.stop()
