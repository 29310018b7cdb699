"""Scenario 3, proxy outage: during a burst the proxy refuses connections, then answers 500s, then hangs
past the client timeout, 30 s each. Every event is applied after recovery, nothing is dead-lettered
for the transient fault, and the retries back off (visible in the logs, no hot loop).

Also here: what happens after the last retry (dead-lettered, replayed by the CLI), and a hung
request that the proxy completes after the worker gave up on it (a stale budget, repaired by
ops.reconcile)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.chaos.harness import (
    Clock,
    Event,
    Publisher,
    assert_no_secrets,
    command_for,
    judge,
    make_stream,
    poll,
    read_state,
    record,
    retries_in_logs,
    settle,
)
from tests.conftest import TEST_ENV
from tests.fixtures import ROOT, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]
DB = TEST_ENV["DATABASE_URL"]
PHASE_S = 30
BURST = 400
WORKERS = 3
# Production's policy shape, scaled down: 12 retries, backoff capped at 30 s (a quarter of the
# visibility timeout). The sum of the smallest possible waits is 120.5 s, longer than the 90 s
# outage, so no event can run out of retries while the proxy is away.
OUTAGE_ENV = {"BROKER_VISIBILITY_TIMEOUT_S": "120", "RETRY_BACKOFF_MAX_S": "30", "TASK_MAX_RETRIES": "12",
              "PROXY_TIMEOUT_S": "2"}
CAP = 30


def test_refused_then_500s_then_hanging_proxy_during_a_burst(pool, chaos_proxy, broker):
    events = make_stream(BURST, seed=3)
    pool.env.update(OUTAGE_ENV)
    pool.start_many(WORKERS)
    publisher = Publisher(TEST_ENV["REDIS_URL"])
    requests: dict[str, int] = {}

    clock = Clock()
    chaos_proxy.stop()  # phase 1: connection refused (open keep-alive connections cut too)
    spread = (PHASE_S - 10) / len(events)
    for ev in events:  # the burst arrives while the proxy is down
        publisher.send(ev)
        time.sleep(spread)
    publisher.close()
    wait_for(lambda: clock() >= PHASE_S, PHASE_S, "the end of phase 1")
    chaos_proxy.mode = "error"  # phase 2: HTTP 500 on every request
    chaos_proxy.start()
    before = chaos_proxy.request_count()
    wait_for(lambda: clock() >= 2 * PHASE_S, PHASE_S + 5, "the end of phase 2")
    requests["500"] = chaos_proxy.request_count() - before
    chaos_proxy.mode = "hang"  # phase 3: every request hangs 30 s, far past PROXY_TIMEOUT_S
    before = chaos_proxy.request_count()
    waiting_at_hang = broker.hlen("unacked")  # retries held by workers until their countdown ends
    wait_for(lambda: clock() >= 3 * PHASE_S, PHASE_S + 5, "the end of phase 3")
    requests["hang"] = chaos_proxy.request_count() - before
    chaos_proxy.mode = "ok"
    recovered_at = clock()
    assert not read_state(DB).dead, "dead-lettered during the outage"

    # Requests that hung are completed by the proxy after the workers gave up on them; the state
    # is final only once they have all landed.
    state, verdict = settle(DB, chaos_proxy, broker, events, timeout=300, what="every event applied after recovery")
    drained_at = clock()
    wait_for(lambda: chaos_proxy.in_flight == 0, 60, "hung requests to finish")
    state = read_state(DB, chaos_proxy)
    verdict = judge(state, events)
    retries = retries_in_logs(pool.log_lines())
    per_task: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for task_id, n, countdown in retries:
        per_task[task_id].append((n, countdown))
    # "retry n in c s" is logged with countdown backoff(n - 1): uniform(ceiling / 2, ceiling).
    ceiling = {n: min(CAP, 2 ** (n - 1)) for _, n, _ in retries}
    off_curve = [(n, c) for _, n, c in retries if not ceiling[n] / 2 - 0.05 <= c <= ceiling[n] + 0.05]
    lines = assert_no_secrets(pool, DB)

    record(
        "3-proxy-outage",
        title="Proxy outage",
        command=command_for("tests/chaos/test_proxy_outage.py::test_refused_then_500s_then_hanging_proxy_during_a_burst"),
        injects=f"a burst of {BURST} events sent during the first {PHASE_S - 10} s of a {3 * PHASE_S} s outage: "
                f"{PHASE_S} s connection refused, {PHASE_S} s HTTP 500, {PHASE_S} s hanging (30 s, client timeout "
                f"{OUTAGE_ENV['PROXY_TIMEOUT_S']} s); {WORKERS} workers, "
                f"TASK_MAX_RETRIES={OUTAGE_ENV['TASK_MAX_RETRIES']}, RETRY_BACKOFF_MAX_S={CAP}",
        events_sent=BURST, messages_published=BURST, applied=verdict.applied, duplicated=verdict.duplicated,
        lost=len(verdict.lost), dead_lettered=len(state.dead), drain_s=drained_at,
        extra={"recovered_at_s": recovered_at, "drain_after_recovery_s": round(drained_at - recovered_at, 1),
               "retry_log_lines": len(retries), "tasks_that_retried": len(per_task),
               "most_retries_of_one_task": max((len(v) for v in per_task.values()), default=0),
               "longest_countdown_s": max((c for _, _, c in retries), default=0),
               "proxy_requests_in_500_phase": requests["500"], "proxy_requests_in_hang_phase": requests["hang"],
               "retries_waiting_at_hang_start": waiting_at_hang, "log_lines_scanned": lines},
    )
    assert not state.dead, state.dead[:3]
    assert verdict.exact, verdict.summary()
    # Backoff: every logged countdown is on the capped exponential curve, and it got long.
    assert retries and not off_curve, off_curve[:10]
    assert max(n for _, n, _ in retries) >= 5
    # No hot loop: within 30 s of 500s, a task waiting 8 s and more between tries asks a few times.
    assert requests["500"] <= 6 * len(per_task), requests


def test_event_out_of_retries_is_dead_lettered_then_replayed_by_the_cli(pool, chaos_proxy, broker, tmp_path):
    """The limit of the guarantee: past TASK_MAX_RETRIES the event waits in dead letters, and
    `litellm-credits dead-letters replay ID` applies it once the proxy is back."""
    env = {"TASK_MAX_RETRIES": "2", "RETRY_BACKOFF_MAX_S": "1"}
    pool.env.update(env)
    pool.start()
    chaos_proxy.mode = "error"
    ev = Event("events.signup", {"user_id": "late@example.com", "occurred_at": "2026-11-20T10:00:00Z"},
               "signup:late@example.com", "late@example.com")
    publisher = Publisher(TEST_ENV["REDIS_URL"])
    clock = Clock()
    publisher.send(ev)
    publisher.close()
    (letter,) = poll(lambda: read_state(DB).dead, 60, "the event to be dead-lettered", 0.2)
    dead_at = clock()
    assert letter["reason"].startswith("gave up after 3 attempts: /key/generate: HTTP 500"), letter
    chaos_proxy.mode = "ok"
    cli_env = {**os.environ, **TEST_ENV, **pool.env}
    cli = str(Path(sys.executable).parent / "litellm-credits")
    done = subprocess.run([cli, "dead-letters", "replay", str(letter["id"])],
                          cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    state, verdict = settle(DB, chaos_proxy, broker, [ev], timeout=60, what="the replayed event")
    assert [d["status"] for d in state.dead] == ["replayed"]
    record(
        "3b-retries-exhausted",
        title="Proxy outage longer than the retries",
        command=command_for("tests/chaos/test_proxy_outage.py::test_event_out_of_retries_is_dead_lettered_then_replayed_by_the_cli"),
        injects="proxy answering 500 to a signup with TASK_MAX_RETRIES=2, RETRY_BACKOFF_MAX_S=1; then "
                "`litellm-credits dead-letters replay ID` after recovery",
        events_sent=1, messages_published=1, applied=verdict.applied, duplicated=verdict.duplicated,
        lost=len(verdict.lost), dead_lettered=1, drain_s=clock(),
        extra={"dead_lettered_after_s": dead_at, "reason": letter["reason"][:120]},
    )
    assert verdict.exact, verdict.summary()


def test_hung_push_completed_late_by_the_proxy_is_repaired_by_reconcile(pool, chaos_proxy, broker):
    """A /key/update the proxy finishes after the worker timed out can land after a newer push: the
    proxy then holds an older max_budget and the worker cannot see it. ops.reconcile repairs it."""
    pool.start()
    user = "stale@example.com"
    signup = Event("events.signup", {"user_id": user, "occurred_at": "2026-11-20T10:00:00Z"}, f"signup:{user}", user)

    def pay(ref: str, minor: int) -> Event:
        return Event("events.payment", {"reference": ref, "user_id": user, "amount_minor": minor, "currency": "USD",
                                        "paid_at": datetime.now(UTC).isoformat()}, f"payment:paystack:{ref}", user)

    first, second = pay("stale-1", 500), pay("stale-2", 2000)
    publisher = Publisher(TEST_ENV["REDIS_URL"])
    publisher.send(signup)
    settle(DB, chaos_proxy, broker, [signup], 60, "the signup")
    chaos_proxy.hang_s = 20.0
    chaos_proxy.mode = "hang"
    publisher.send(first)  # its push of 12 hangs; the proxy applies it 20 s later
    wait_for(lambda: chaos_proxy.in_flight == 1, 30, "the push to hang")
    chaos_proxy.mode = "ok"
    settle(DB, chaos_proxy, broker, [signup, first], 60, "the retried push")
    publisher.send(second)
    settle(DB, chaos_proxy, broker, [signup, first, second], 60, "the second payment")
    publisher.close()
    wait_for(lambda: chaos_proxy.in_flight == 0, 60, "the hung push to land")
    alias = read_state(DB).accounts[user]["alias"]
    drifted = chaos_proxy.budgets()[alias]
    publisher = Publisher(TEST_ENV["REDIS_URL"])
    publisher.send_task("ops.reconcile")
    publisher.close()
    state, verdict = settle(DB, chaos_proxy, broker, [signup, first, second], 60, "reconcile to repair the budget")
    record(
        "3c-late-hung-push",
        title="A hung push completed late",
        command=command_for("tests/chaos/test_proxy_outage.py::test_hung_push_completed_late_by_the_proxy_is_repaired_by_reconcile"),
        injects="a /key/update that hangs 20 s and is then applied by the proxy, after the retry and a newer push",
        events_sent=3, messages_published=3, applied=verdict.applied, duplicated=verdict.duplicated,
        lost=len(verdict.lost), dead_lettered=len(state.dead), drain_s=None,
        extra={"budget_after_late_landing": str(drifted), "ledger_total": str(state.totals[user]),
               "budget_after_reconcile": str(chaos_proxy.budgets()[alias])},
    )
    assert drifted == Decimal(12), "the late push did not land after the newer one (timing); nothing to repair"
    assert verdict.exact, verdict.summary()
