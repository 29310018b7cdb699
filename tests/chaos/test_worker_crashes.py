"""Scenario 2, worker crashes: while 3 worker processes consume the 2,000-event stream, a random one
is SIGKILLed (with its pool child) and restarted every few hundred milliseconds."""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest

from tests.chaos.harness import (
    Clock,
    Event,
    Publisher,
    assert_no_secrets,
    command_for,
    make_stream,
    record,
    settle,
)
from tests.conftest import TEST_ENV
from tests.fixtures import wait_for
from worker.settings import Settings

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]
DB = TEST_ENV["DATABASE_URL"]
EVENTS = 2000
WORKERS = 3
KILL_EVERY_S = (0.2, 0.6)
KILLS = 25
KILL_PHASE_MAX_S = 180
# A worker needs a few seconds of CPU to boot on this 2-core machine; one killed within a few
# hundred ms of being ready has not taken a message yet. Victims are workers ready for MIN_UP_S.
MIN_UP_S = 0.5
# The settings' default: a killed worker's messages come back by its heartbeat, not by this.
DEFAULT_VISIBILITY = {"BROKER_VISIBILITY_TIMEOUT_S": str(Settings.model_fields["broker_visibility_timeout_s"].default)}


def queued(broker) -> int:
    return sum(broker.llen(q) for q in ("signups", "payments"))


def reserved(broker, queue: str) -> int:
    """Messages taken from `queue` and not yet acknowledged (the spend sync's are there too)."""
    return sum(1 for raw in broker.hvals("unacked") if json.loads(raw)[2] == queue)


def unfinished(broker) -> int:
    """Waiting in a queue, or taken and not yet acknowledged: a worker holds up to two batches'
    worth, so the queues can be empty long before the work is done."""
    return queued(broker) + broker.hlen("unacked")


def test_random_worker_sigkilled_and_restarted_every_few_hundred_ms(pool, chaos_proxy, broker):
    pool.env.update(DEFAULT_VISIBILITY)
    events = make_stream(EVENTS, seed=2)
    slots = pool.start_many(WORKERS)
    up_since = {p.pid: time.monotonic() for p in slots}
    publisher = Publisher(TEST_ENV["REDIS_URL"])
    rng = random.Random(2)

    clock = Clock()
    publisher.send_all(events)
    publisher.close()
    kills, idle_ticks, taken_during_kills = 0, 0, queued(broker)
    deadline = time.monotonic() + KILL_PHASE_MAX_S
    # The fault schedule: every few hundred ms, SIGKILL the process group of one random worker
    # that is up, and start its replacement at once; KILLS times, then the workers are left alone
    # to drain. A tick finding no worker up is skipped (they are all still booting).
    while kills < KILLS and time.monotonic() < deadline and unfinished(broker):
        time.sleep(rng.uniform(*KILL_EVERY_S))
        now = time.monotonic()
        for p in slots:
            if p.pid not in up_since and p.poll() is None and pool.is_ready(p):
                up_since[p.pid] = now
        up = [i for i, p in enumerate(slots) if p.poll() is None and now - up_since.get(p.pid, now) >= MIN_UP_S]
        if not up:
            idle_ticks += 1
            continue
        i = rng.choice(up)
        pool.kill(slots[i])
        slots[i] = pool.spawn()
        kills += 1
    kill_phase_s = clock()
    taken_during_kills -= queued(broker)

    state, verdict = settle(DB, chaos_proxy, broker, events, timeout=400, what="the queues to drain exactly")
    drain_s = clock()
    assert all(p.poll() is None for p in slots), "a restarted worker died on its own"
    deliveries = pool.deliveries()
    lines = assert_no_secrets(pool, DB)

    record(
        "2-worker-crashes",
        title="Worker crashes",
        command=command_for("tests/chaos/test_worker_crashes.py"),
        injects=f"{kills} SIGKILLs in {kill_phase_s} s of a random one of {WORKERS} worker processes (with its "
                f"pool child) that had been up {MIN_UP_S} s, on ticks every {KILL_EVERY_S[0]}-{KILL_EVERY_S[1]} s, "
                f"each restarted at once",
        events_sent=EVENTS, messages_published=EVENTS, applied=verdict.applied, duplicated=verdict.duplicated,
        lost=len(verdict.lost), dead_lettered=len(state.dead), drain_s=drain_s,
        extra={"kills": kills, "kill_phase_s": kill_phase_s, "ticks_with_no_worker_up": idle_ticks,
               "messages_taken_during_kill_phase": taken_during_kills,
               "drain_after_last_kill_s": round(drain_s - kill_phase_s, 1),
               "deliveries": sum(deliveries.values()),
               "messages_delivered_more_than_once": sum(1 for n in deliveries.values() if n > 1),
               "visibility_timeout_s": int(pool.env["BROKER_VISIBILITY_TIMEOUT_S"]),
               "log_lines_scanned": lines},
    )
    assert kills == KILLS, f"only {kills} kills in {kill_phase_s} s: the scenario did not inject enough"
    assert not state.dead, state.dead[:3]
    assert verdict.exact


def test_worker_killed_while_a_message_is_on_its_way_to_it_loses_nothing(pool, chaos_proxy, broker):
    """The window SIGKILL hits by chance above, made certain: the worker is frozen while it waits
    on the queues, a message arrives, the worker is killed. Stock kombu's BRPOP hands the message
    to the frozen process and it is gone (in neither the queue nor the unacked hash); the guarded
    transport (worker/broker.py) waits without taking, so the message is still queued."""
    pool.env.update(DEFAULT_VISIBILITY)
    victim = pool.start()

    def waiting() -> bool:
        return any(c["db"] == str(broker.connection_pool.connection_kwargs["db"]) and "b" in c["flags"]
                   for c in broker.client_list())

    for _ in range(50):
        wait_for(waiting, 30, "the worker to wait on the queues")
        os.kill(victim.pid, signal.SIGSTOP)
        if waiting():  # frozen in the middle of its wait
            break
        os.kill(victim.pid, signal.SIGCONT)
    else:
        raise AssertionError("could not freeze the worker while it waited")
    user = "frozen@example.com"
    ev = Event("events.signup", {"user_id": user, "occurred_at": "2026-11-20T10:00:00Z"}, f"signup:{user}", user)
    publisher = Publisher(TEST_ENV["REDIS_URL"])
    publisher.send(ev)
    publisher.close()
    pool.kill(victim)
    kept = broker.llen("signups") + reserved(broker, "signups")
    pool.start()
    state, verdict = settle(DB, chaos_proxy, broker, [ev], timeout=60, what="the message to be applied")
    record(
        "2b-kill-while-message-in-transit",
        title="Worker killed while a message is on its way to it",
        command=command_for("tests/chaos/test_worker_crashes.py::"
                            "test_worker_killed_while_a_message_is_on_its_way_to_it_loses_nothing"),
        injects="SIGSTOP of a worker blocked waiting on the queues, one event pushed, SIGKILL, a new worker",
        events_sent=1, messages_published=1, applied=verdict.applied, duplicated=verdict.duplicated,
        lost=len(verdict.lost), dead_lettered=len(state.dead), drain_s=None,
        extra={"message_still_in_redis_after_kill": kept},
    )
    assert kept == 1, "the killed worker took the message with it"
    assert verdict.exact
