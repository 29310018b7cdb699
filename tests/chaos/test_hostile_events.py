"""Scenario 7c, hostile events that are well-formed enough to be dangerous (issue 15): each one tried
to mint or lose money through a gap in validation, and each was reproduced against a real worker.

The service-level tests pin each gap one by one (fast, in-process, real PostgreSQL); the last test
sends all of them, signed where signing is the point, through a real worker with signing on and
an alert webhook, between good events, and counts them for docs/reliability.md."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tasks.alerts import alert_webhook
from tasks.payment import payment, refund
from tasks.signup import signup
from tests.chaos.harness import assert_no_secrets, command_for, poll, read_state, record
from tests.conftest import TEST_ENV
from tests.fixtures import ROOT
from worker import signing
from worker.credits import ledger
from worker.db import session_scope
from worker.models import DeadLetter, LedgerEntry
from worker.settings import Settings, get_settings

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]
DB = TEST_ENV["DATABASE_URL"]
SECRET = "hostile-events-signing-secret-0123456789"  # 40 bytes
AT = "2026-11-20T10:00:00Z"
OUT_OF_RANGE = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "1999-12-31T23:59:59Z",
                "2999-01-01T00:00:00Z"]


def pay(user: str, reference: str, amount_minor: Any = 500, **fields: Any) -> dict[str, Any]:
    return {"provider": "paystack", "reference": reference, "user_id": user, "amount_minor": amount_minor,
            "currency": "USD", "paid_at": AT, **fields}


def refund_of(user: str, reference: str, payment_reference: str, amount_minor: Any = 500,
              **fields: Any) -> dict[str, Any]:
    return {"provider": "paystack", "refund_reference": reference, "payment_reference": payment_reference,
            "user_id": user, "amount_minor": amount_minor, "currency": "USD", "refunded_at": AT, **fields}


def signed(event: dict[str, Any], secret: str = SECRET) -> dict[str, Any]:
    return {**event, "signature": signing.sign(event, secret)}


def reasons() -> list[str]:
    with session_scope() as session:
        return [d.reason for d in session.execute(select(DeadLetter).order_by(DeadLetter.id)).scalars()]


def credited(user: str) -> Decimal:
    with session_scope() as session:
        return ledger.credited_total(session, user)


def entries(kind: str) -> list[LedgerEntry]:
    with session_scope() as session:
        return list(session.execute(select(LedgerEntry).where(LedgerEntry.kind == kind)).scalars())


@pytest.fixture
def signing_on(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EVENT_SIGNING_SECRET", SECRET)
    get_settings.cache_clear()
    yield SECRET
    monkeypatch.delenv("EVENT_SIGNING_SECRET")
    get_settings.cache_clear()


class Receiver:
    """An alert webhook endpoint that records every POST and accepts it."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                receiver.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


# -- 1. the signing secret ------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["", "   ", "\t\n", "x" * 31, "é" * 15])
def test_a_set_but_empty_whitespace_or_short_secret_stops_the_cli_and_the_worker(value):
    env = {**TEST_ENV, "PATH": str(Path(sys.executable).parent), "EVENT_SIGNING_SECRET": value}
    for cmd in ([str(Path(sys.executable).parent / "litellm-credits"), "run"],
                [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", "signups"]):
        code, stderr = run_briefly(cmd, env)
        lines = stderr.strip().splitlines()
        assert code not in (None, 0) and len(lines) == 1 and "EVENT_SIGNING_SECRET" in lines[0], (cmd, code, stderr)
        assert value.strip() == "" or value not in lines[0]  # the secret itself is never echoed


def run_briefly(cmd: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int | None, str]:
    """(exit code, stderr) of a process expected to refuse to start; one that starts instead (a
    worker, with its beat and pool children) is killed with its whole session: code None."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
        return proc.returncode, stderr
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        return None, stderr


def test_an_absent_secret_is_off_and_a_long_one_is_on(monkeypatch):
    monkeypatch.delenv("EVENT_SIGNING_SECRET", raising=False)
    assert Settings(_env_file=None).event_signing_secret is None
    monkeypatch.setenv("EVENT_SIGNING_SECRET", "y" * 32)
    assert Settings(_env_file=None).event_signing_secret.get_secret_value() == "y" * 32


# -- 2. timestamps --------------------------------------------------------------------------------

@pytest.mark.parametrize("when", OUT_OF_RANGE)
def test_an_out_of_range_timestamp_is_dead_lettered_at_validation(proxy, when):
    signup.apply(kwargs={"event": {"user_id": "t1", "occurred_at": when}})
    payment.apply(kwargs={"event": pay("t2", "T1", paid_at=when)})
    payment.apply(kwargs={"event": pay("t3", "T2")})
    refund.apply(kwargs={"event": refund_of("t3", "R1", "T2", refunded_at=when)})
    got = reasons()
    assert [r.split(":")[0] for r in got] == ["occurred_at", "paid_at", "refunded_at"], got
    assert all("must be between 2000-01-01T00:00:00Z and one day after the worker's clock" in r for r in got)
    assert [e.user_id for e in entries("payment")] == ["t3"] and not entries("refund") and not entries("grant")


# -- 3. refund references -------------------------------------------------------------------------

def test_a_refund_reference_reused_for_another_payment_is_dead_lettered_naming_the_first(proxy):
    payment.apply(kwargs={"event": pay("r1", "T1")})
    payment.apply(kwargs={"event": pay("r1", "T2")})
    payment.apply(kwargs={"event": pay("r2", "T3")})
    refund.apply(kwargs={"event": refund_of("r1", "R1", "T1")})
    refund.apply(kwargs={"event": refund_of("r1", "R1", "T1")})  # the same refund again: a duplicate
    assert reasons() == []
    refund.apply(kwargs={"event": refund_of("r1", "R1", "T2")})
    refund.apply(kwargs={"event": refund_of("r2", "R1", "T3")})
    refund.apply(kwargs={"event": refund_of("r1", "R1", "T1", amount_minor=100)})
    assert reasons() == [
        "refund reference 'R1' was already used for payment 'T1'",
        "refund reference 'R1' was already used for payment 'T1' of another user",
        "refund reference 'R1' was already used for payment 'T1' with another amount (5.00, not 1.00 USD)",
    ]
    assert len(entries("refund")) == 1 and credited("r1") == 10 and credited("r2") == 10


# -- 4. integers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("amount", ["500", True, 500.0, 5e2, "5e2", None, [500]])
def test_amounts_must_be_json_integers(proxy, amount):
    payment.apply(kwargs={"event": pay("i1", "I1", amount_minor=amount)})
    payment.apply(kwargs={"event": pay("i1", "I2")})
    refund.apply(kwargs={"event": refund_of("i1", "R1", "I2", amount_minor=amount)})
    got = reasons()
    assert len(got) == 2 and all(r.startswith("amount_minor: ") for r in got), got
    assert amount is None or all("must be a JSON integer such as 500" in r for r in got), got
    assert [e.idempotency_key for e in entries("payment")] == ["payment:paystack:I2"] and not entries("refund")


def test_the_json_schema_says_amounts_are_integer_literals():
    for name in ("payment", "refund"):
        schema = json.loads((ROOT / "schemas" / "json" / f"{name}.schema.json").read_text())
        amount = schema["properties"]["amount_minor"]
        assert amount["type"] == "integer" and "500.0" in amount["description"]


# -- 5. internal tasks ----------------------------------------------------------------------------

def test_the_producer_api_sends_only_event_tasks():
    from worker.producer import enqueue

    for task in ("ops.alert_webhook", "spend.window", "ops.reconcile", "celery.chord_unlock"):
        with pytest.raises(ValueError, match="not an event task"):
            enqueue(task, {"alert_id": "x", "user_id": "x"})


def test_a_forged_alert_webhook_message_posts_nothing(proxy, monkeypatch):
    hook = Receiver()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", hook.url)
    get_settings.cache_clear()
    try:
        alert_webhook.apply(kwargs={"event": {"alert_id": "x:1", "user_id": "x", "anything": "attacker's JSON"}})
        alert_webhook.apply(kwargs={"event": {"fired_alert_id": 424242}})
        alert_webhook.apply(kwargs={"event": {"fired_alert_id": "1"}})
    finally:
        hook.server.shutdown()
    got = reasons()
    assert hook.posts == [] and len(got) == 3, got
    assert "fired_alert_id: Field required" in got[0] and got[1].startswith("no fired alert 424242"), got
    assert got[2].startswith("fired_alert_id: "), got


# -- 6. signups -----------------------------------------------------------------------------------

def test_with_signing_on_a_forged_or_unsigned_signup_is_refused(proxy, signing_on):
    forged = {"user_id": "s1", "email": "attacker@example.com", "occurred_at": AT}
    signup.apply(kwargs={"event": forged})
    signup.apply(kwargs={"event": signed(forged, "a-different-secret-of-32-bytes-or-more")})
    assert [r.split(" (")[0].split(":")[0] for r in reasons()] == ["missing signature", "bad signature"]
    real = {"user_id": "s1", "email": "s1@example.com", "occurred_at": AT}
    signup.apply(kwargs={"event": signed(real)})
    with session_scope() as session:
        assert ledger.entry(session, "signup:s1") is not None
    assert read_state(DB).accounts["s1"]["email"] == "s1@example.com"


def test_signups_must_be_signed_can_be_switched_off_but_a_bad_signature_still_counts(proxy, signing_on,
                                                                                      monkeypatch):
    monkeypatch.setenv("SIGNUPS_MUST_BE_SIGNED", "false")
    get_settings.cache_clear()
    signup.apply(kwargs={"event": {"user_id": "s2", "occurred_at": AT}})
    signup.apply(kwargs={"event": {"user_id": "s3", "occurred_at": AT, "signature": "0" * 64}})
    assert [r[:13] for r in reasons()] == ["bad signature"]
    assert [e.user_id for e in entries("grant")] == ["s2"]


def test_the_producer_signs_signups(proxy, signing_on, redis_client):
    from worker.producer import publish_signup

    publish_signup({"user_id": "s4", "occurred_at": AT})
    message = json.loads(redis_client.lindex("signups", 0))
    event = json.loads(base64.b64decode(message["body"]))[1]["event"]
    assert signing.verify(event, SECRET, signing.SIGNUPS_SIGNED) is None


# -- 7. signature shapes --------------------------------------------------------------------------

def test_a_non_ascii_signature_gets_a_reason_and_uppercase_hex_is_accepted(proxy, signing_on):
    good = pay("h1", "H1")
    payment.apply(kwargs={"event": {**good, "signature": "é" * 64}})
    payment.apply(kwargs={"event": {**good, "signature": "not hex"}})
    assert signing.verify({**good, "signature": "ü" * 64}, SECRET).startswith("bad signature: must be 64 hex")
    payment.apply(kwargs={"event": {**good, "signature": signing.sign(good, SECRET).upper()}})
    got = reasons()
    assert len(got) == 2 and not any(r.startswith("unexpected error") for r in got), got
    assert "non-ASCII" in got[0] and "got 7 characters" in got[1], got
    assert credited("h1") == 10


# -- all of them through a real worker ------------------------------------------------------------

def envelope(task: str, event: Any, queue: str) -> bytes:
    """A Celery protocol-2 message as README.md documents it, built by hand (any producer could)."""
    task_id = str(uuid.uuid4())
    body = [[], {"event": event}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    return json.dumps({
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-type": "application/json", "content-encoding": "utf-8",
        "headers": {"lang": "js", "task": task, "id": task_id, "root_id": task_id},
        "properties": {"correlation_id": task_id, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
                       "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": queue},
                       "priority": 0},
    }).encode()


# What the service-level tests above try, per item of issue 15 (for the record in docs/reliability.md).
SERVICE_INPUTS = {"1 secrets (x CLI and worker)": 5 * 2, "2 timestamps (x 3 events)": 4 * 3,
                  "3 refund references": 3, "4 amounts (x payment and refund)": 7 * 2,
                  "5 internal tasks (3 forged messages, 4 producer sends)": 7, "6 signups": 3, "7 signatures": 3}
QUEUE = {"events.signup": "signups", "events.payment": "payments", "events.refund": "payments",
         "ops.alert_webhook": "payments", "spend.window": "signups"}


def test_every_hostile_event_through_a_real_worker(pool, chaos_proxy, broker):
    hook = Receiver()
    pool.start(env={"EVENT_SIGNING_SECRET": SECRET, "ALERT_WEBHOOK_URL": hook.url})
    tag = uuid.uuid4().hex[:6]
    u, v = f"hx-{tag}", f"hy-{tag}"

    def push(task: str, event: Any) -> None:
        broker.lpush(QUEUE[task], envelope(task, event, QUEUE[task]))

    def applied(*keys: str) -> None:
        poll(lambda: all(k in read_state(DB).ledger for k in keys), 60, f"{keys} applied", 0.1)

    # Good events first: two payments (one signed in uppercase hex) and a refund of the first.
    push("events.signup", signed({"user_id": u, "email": f"{u}@example.com", "occurred_at": AT}))
    push("events.payment", signed(pay(u, f"T1-{tag}")))
    upper = pay(u, f"T2-{tag}")
    push("events.payment", {**upper, "signature": signing.sign(upper, SECRET).upper()})
    push("events.refund", signed(refund_of(u, f"R1-{tag}", f"T1-{tag}")))
    applied(f"signup:{u}", f"payment:paystack:T1-{tag}", f"payment:paystack:T2-{tag}",
            f"refund:paystack:R1-{tag}")
    hostile: list[tuple[str, str, Any, str]] = [  # (kind, task, event, what its dead letter must say)
        *[(f"timestamp {w}", "events.payment", signed(pay(v, f"TS{i}-{tag}", paid_at=w)), "paid_at: ")
          for i, w in enumerate(OUT_OF_RANGE[:2])],
        ("timestamp refund", "events.refund", signed(refund_of(u, f"RT-{tag}", f"T2-{tag}",
                                                               refunded_at=OUT_OF_RANGE[0])), "refunded_at: "),
        ("refund reference reused", "events.refund", signed(refund_of(u, f"R1-{tag}", f"T2-{tag}")),
         f"refund reference 'R1-{tag}' was already used for payment 'T1-{tag}'"),
        *[(f"amount {json.dumps(a)}", "events.payment", signed(pay(v, f"A{i}-{tag}", amount_minor=a)),
           "amount_minor: Value error, must be a JSON integer") for i, a in enumerate(["500", True, 500.0])],
        ("internal task on a producer's queue, raw body", "ops.alert_webhook",
         {"alert_id": "x:1", "user_id": u, "note": "arbitrary JSON for the webhook"},
         "task 'ops.alert_webhook' is not taken from queue 'payments'; its queue is 'spend'"),
        ("internal task on a producer's queue, a window of the producer's choice", "spend.window",
         {"start": "2026-11-20T10:00:00Z", "run_id": 1, "reader": "x"},
         "task 'spend.window' is not taken from queue 'signups'; its queue is 'spend'"),
        ("unsigned signup", "events.signup", {"user_id": v, "email": "attacker@example.com", "occurred_at": AT},
         "missing signature"),
        ("forged signup", "events.signup",
         signed({"user_id": v, "email": "attacker@example.com", "occurred_at": AT}, "x" * 40), "bad signature"),
        ("non-ASCII signature", "events.payment", {**pay(v, f"NA-{tag}"), "signature": "ß" * 64},
         "signature: Value error, must be 64 hexadecimal digits"),
        ("unsigned payment", "events.payment", pay(v, f"U-{tag}"), "missing signature"),
    ]
    before = len(read_state(DB).dead)
    for _, task, event, _ in hostile:
        push(task, event)
    last = signed(pay(u, f"T3-{tag}"))
    push("events.payment", last)
    applied(f"payment:paystack:T3-{tag}")
    dead = poll(lambda: (d := read_state(DB).dead[before:]) and len(d) >= len(hostile) and d, 60,
                "every hostile event dead-lettered", 0.1)
    hook.server.shutdown()
    assert len(dead) == len(hostile), dead
    by_reason = sorted(d["reason"] for d in dead)
    for kind, _, _, says in hostile:
        assert any(says in r for r in by_reason), (kind, says, by_reason)
    assert not any(r.startswith("unexpected error") for r in by_reason), by_reason
    state = read_state(DB, chaos_proxy)
    assert state.totals[u] == Decimal(2 + 10 + 10 - 10 + 10) and v not in state.totals
    assert v not in state.accounts and hook.posts == []
    assert sum("event signing is on" in line for line in pool.log_lines()) == 1
    assert all(p.poll() is None for p in pool.procs), "the worker died"
    lines = assert_no_secrets(pool, DB)
    record(
        "7c-hostile-events",
        title="Hostile events (issue 15)",
        command=command_for("tests/chaos/test_hostile_events.py"),
        injects=f"{len(hostile)} hand-built messages LPUSHed onto signups/payments, each aimed at one validation "
                "gap (signed where the signature is not the point), between 5 good events; 1 worker with "
                f"EVENT_SIGNING_SECRET and ALERT_WEBHOOK_URL set; plus the {sum(SERVICE_INPUTS.values())} inputs "
                "of the service-level tests in the same file",
        events_sent=len(hostile) + 5, messages_published=len(hostile) + 5, applied=5, duplicated=0, lost=0,
        dead_lettered=len(dead), drain_s=None,
        extra={"hostile_inputs_here": len(hostile), "hostile_inputs_in_service_tests": SERVICE_INPUTS,
               "by_kind": [k for k, _, _, _ in hostile], "webhook_posts": len(hook.posts),
               "reasons": [r[:110] for r in by_reason], "log_lines_scanned": lines},
    )
