"""The CLI: --json on every read command, rich tables otherwise, one-line errors with exit codes."""

from __future__ import annotations

import json

from sqlalchemy import text
from typer.testing import CliRunner

from tasks.payment import payment
from tasks.signup import signup
from worker.cli.main import app
from worker.db import session_scope
from worker.producer import publish_signup
from worker.settings import get_settings

USER = "erin@example.com"
AT = "2026-11-20T10:00:00Z"
runner = CliRunner()


def run(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    return result


def as_json(*args: str):
    return json.loads(run(*args, "--json").stdout)


def assert_one_line_error(result, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    assert all(w in lines[0] for w in words), lines[0]


def test_account_commands_json_table_and_unknown_user(proxy):
    signup.apply(kwargs={"event": {"user_id": USER, "email": USER, "occurred_at": AT}})
    balance = as_json("balance", USER)
    assert balance["credited_usd"] == "2.0000000000"
    assert balance["spent_usd"] == balance["savings_usd"] == "0.0000000000"  # not "0E-10"
    assert [e["kind"] for e in as_json("ledger", USER)] == ["grant"]
    assert as_json("key", USER)["key"].startswith("sk-")
    assert "remaining_usd" in run("balance", USER).stdout  # the rich table
    for command in ("balance", "key"):
        assert_one_line_error(run(command, "nobody", "--json", code=1), "no account", "nobody")
    assert as_json("ledger", "nobody") == []


def test_dead_letter_commands(proxy, redis_client):
    signup.apply(kwargs={"event": {"user_id": "bad user!", "occurred_at": AT}})
    payment.apply(kwargs={"event": {"reference": "p7", "user_id": USER, "amount_minor": 700, "currency": "USD",
                                    "paid_at": AT}})
    listed = as_json("dead-letters", "list")
    assert [d["task_name"] for d in listed] == ["events.payment", "events.signup"]
    payment_letter, signup_letter = listed[0]["id"], listed[1]["id"]
    assert "matches no plan" in as_json("dead-letters", "show", str(payment_letter))["reason"]
    assert "re-enqueued as events.payment" in run("dead-letters", "replay", str(payment_letter)).stdout
    assert redis_client.llen("payments") == 1
    run("dead-letters", "discard", str(signup_letter))
    assert as_json("dead-letters", "list") == []
    assert [d["id"] for d in as_json("dead-letters", "list", "--status", "discarded")] == [signup_letter]
    assert_one_line_error(run("dead-letters", "replay", str(signup_letter), code=1), "already discarded")
    assert_one_line_error(run("dead-letters", "show", "999", code=1), "no dead letter 999")


def test_publish_enqueues_validated_events_and_refuses_bad_ones(redis_client, monkeypatch):
    out = as_json("publish", "signup", USER, "--email", USER)
    assert out["task"] == "events.signup" and out["event"]["user_id"] == USER and redis_client.llen("signups") == 1
    monkeypatch.setenv("EVENT_SIGNING_SECRET", "s3cret-for-the-cli-test-0123456789abcdef")
    get_settings.cache_clear()
    out = as_json("publish", "payment", USER, "--reference", "p1", "--amount-minor", "500", "--at", AT)
    queued = json.loads(redis_client.lindex("payments", 0))
    assert queued["headers"]["id"] == out["task_id"] and "signature" not in json.dumps(out)
    assert "***" in queued["headers"]["kwargsrepr"]  # what Flower and logs show: no signature
    result = run("publish", "refund", USER, "--refund-reference", "r1", "--payment-reference", "p1",
                 "--amount-minor", "500")
    assert result.stdout.startswith("events.refund enqueued as task ")
    assert_one_line_error(run("publish", "signup", "bad user!", code=1), "invalid signup event", "user_id")
    assert_one_line_error(run("publish", "payment", USER, "--reference", "p2", "--amount-minor", "500",
                              "--at", "2026-11-20T10:00:00", code=1), "paid_at")
    assert redis_client.llen("signups") == 1 and redis_client.llen("payments") == 2


def test_status_reports_queues_workers_sync_dead_letters_and_drift(workers, proxy, redis_client):
    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": AT}})
    signup.apply(kwargs={"event": {"user_id": "bad user!", "occurred_at": AT}})
    publish_signup({"user_id": "queued", "occurred_at": AT})  # waits: no worker consumes signups
    workers.start(queues="spend")
    with session_scope() as session:
        session.execute(text("UPDATE accounts SET budget_pushed_usd = 0 WHERE user_id = :u"), {"u": USER})
    found = json.loads(run("status", "--timeout", "3", "--json", code=1).stdout)  # 1: a dead letter is open
    assert found["queues"] == {"signups": 1, "payments": 0, "spend": 0, "periodic": 0} and found["unacked"] == 0
    assert len(found["workers"]) == 1 and found["workers"][0].startswith("w0-")
    assert found["dead_letters_open"] == 1 and found["drift_accounts"] == 1
    assert found["dead_letters"] == [{"task": "events.signup", "reason": "rejected", "count": 1}]
    assert "lag_seconds" in found["spend_sync"]
    shown = run("status", code=1)
    assert "queue signups" in shown.stdout and "accounts drifted" in shown.stdout
    assert_one_line_error(shown, "1 dead letters open")


def test_status_without_redis_is_one_line_and_nonzero(monkeypatch):
    from worker.app import app as celery_app

    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:1/0")
    assert_one_line_error(run("status", code=2), "Connection refused")


def test_reconcile_and_sync_spend_wait_their_turn_behind_a_running_job(proxy):
    """An operator's run beside the beat's (or a second beat) does nothing and says why."""
    from worker.db import Lock, exclusive

    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": AT}})
    proxy.keys[next(iter(proxy.keys))]["max_budget"] = 999  # drift that --fix would repair
    with exclusive(Lock.RECONCILE) as held:
        assert held
        assert_one_line_error(run("reconcile", "--fix", code=1), "another reconcile is running")
        assert next(iter(proxy.keys.values()))["max_budget"] == 999
    assert as_json("reconcile", "--fix")["fixed"] == 1
    with exclusive(Lock.SPEND_SYNC) as held:
        assert held
        assert_one_line_error(run("sync-spend", code=1), "another spend sync is running")


def test_version_and_help_grouped_by_purpose():
    from importlib.metadata import version

    assert run("--version").stdout.strip() == f"litellm-credits {version('litellm-credits')}"
    shown = run("--help").stdout
    panels = [f"─ {p} ─" for p in ("Run and set up", "Accounts", "Credit", "Operate and repair")]
    assert [shown.index(p) for p in panels] == sorted(shown.index(p) for p in panels)
    assert shown.index("check ") < shown.index(panels[1]) < shown.index("balance ") < shown.index(panels[2])
    assert "Exit codes" in shown
    assert "all-in-one local mode" in run("run", "--help").stdout.lower()


def test_status_exits_1_when_no_worker_answers(redis_client):
    result = run("status", "--timeout", "0.2", code=1)
    assert_one_line_error(result, "no worker answered")


def test_flower_listens_on_localhost_unless_told_otherwise(monkeypatch):
    import celery

    import worker.logs

    started = []
    monkeypatch.setenv("FLOWER_PASSWORD", "not-the-default-0")
    monkeypatch.setattr(celery.Celery, "start", lambda self, argv: started.append(argv))
    monkeypatch.setattr(worker.logs, "configure", lambda: None)  # its handler would outlive this runner's stderr
    run("flower")
    assert started == [["flower", "--address=127.0.0.1", "--port=5555"]]


def test_publish_adjustment_and_redeem(redis_client):
    out = as_json("publish", "adjustment", USER, "-2.50", "--reason", "goodwill", "--reference", "a1",
                  "--actor", "ops")
    assert out["task"] == "events.adjustment" and out["event"]["amount_usd"] == "-2.50"
    out = as_json("publish", "redeem", USER, "PROMO-SECRET-1")
    assert out["task"] == "events.redeem" and out["event"]["code"] == "***"  # not echoed
    queued = [json.loads(m) for m in redis_client.lrange("payments", 0, -1)]
    assert sorted(m["headers"]["task"] for m in queued) == ["events.adjustment", "events.redeem"]
    assert_one_line_error(run("publish", "adjustment", USER, "0", "--reason", "r", "--reference", "a2",
                              "--actor", "ops", code=1), "invalid adjustment event")


def test_reconcile_exits_0_once_fix_has_repaired_the_drift(proxy):
    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": AT}})
    proxy.keys[next(iter(proxy.keys))]["max_budget"] = 999
    assert_one_line_error(run("reconcile", code=1), "1 differences or unchecked keys found", "--fix")
    run("reconcile", "--fix")
    run("reconcile")
