"""Scenario 5, broker restart: a private redis-server (never the machine's shared one) is killed and
started again on the same port and directory mid-burst. With its append-only file on, as in
docker-compose.yml, every event already enqueued is still applied and the workers reconnect by
themselves. Without persistence, what was queued is lost; replaying it from the producer repairs it."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import (
    Clock,
    PrivateRedis,
    Publisher,
    assert_no_secrets,
    broker_idle,
    command_for,
    make_stream,
    poll,
    read_state,
    record,
    settle,
)
from tests.conftest import TEST_ENV

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]
DB = TEST_ENV["DATABASE_URL"]
BURST = 1000
DOWN_S = 3
WORKERS = 3


@pytest.fixture
def redis_aof(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis-aof", appendonly=True).start()
    yield server
    server.kill()


@pytest.fixture
def redis_volatile(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis-volatile", appendonly=False).start()
    yield server
    server.kill()


def applied() -> int:
    return len(read_state(DB).ledger)


def kill_and_restart(server: PrivateRedis) -> dict[str, int]:
    """SIGKILL (a crash: no shutdown, no final rewrite), DOWN_S away, then the same port and dir."""
    client = server.client()
    at_kill = {"queued": sum(client.llen(q) for q in ("signups", "payments")), "unacked": client.hlen("unacked"),
               "applied": applied()}
    server.kill(signal.SIGKILL)
    time.sleep(DOWN_S)  # the fault: how long the broker stays away
    server.start()
    at_kill["after_restart_queued"] = sum(client.llen(q) for q in ("signups", "payments"))
    at_kill["after_restart_unacked"] = client.hlen("unacked")
    return at_kill


def reconnected(pool) -> int:
    """Workers whose log shows a second 'Connected to' line after the broker came back."""
    marker = "Connected to worker.delivery.broker"
    return sum(1 for path in pool.logs if path.read_text(errors="replace").count(marker) >= 2)


def test_redis_with_aof_killed_and_restarted_mid_burst(pool, chaos_proxy, redis_aof):
    pool.env["REDIS_URL"] = redis_aof.url()
    workers = pool.start_many(WORKERS)
    pids = [p.pid for p in workers]
    events = make_stream(BURST, seed=5)
    publisher = Publisher(redis_aof.url())
    clock = Clock()
    publisher.send_all(events)
    publisher.close()
    poll(lambda: applied() >= BURST // 4, 120, "a quarter of the burst applied", 0.1)
    at_kill = kill_and_restart(redis_aof)
    restarted_at = clock()
    state, verdict = settle(DB, chaos_proxy, redis_aof.client(), events, 300, "every enqueued event applied")
    drained_at = clock()
    alive = [p.pid for p in workers if p.poll() is None]
    lines = assert_no_secrets(pool, DB)
    record(
        "5-broker-restart",
        title="Broker restart",
        command=command_for("tests/chaos/test_broker_restart.py::test_redis_with_aof_killed_and_restarted_mid_burst"),
        injects=f"a private redis-server (appendonly yes, appendfsync everysec) SIGKILLed after {at_kill['applied']} "
                f"of {BURST} enqueued events were applied, down {DOWN_S} s, restarted on the same port and dir; "
                f"{WORKERS} workers left alone",
        events_sent=BURST, messages_published=BURST, applied=verdict.applied, duplicated=verdict.duplicated,
        lost=len(verdict.lost), dead_lettered=len(state.dead), drain_s=drained_at,
        extra={**{f"at_kill_{k}": v for k, v in at_kill.items()}, "restarted_at_s": restarted_at,
               "drain_after_restart_s": round(drained_at - restarted_at, 1),
               "workers_still_running": len(alive), "workers_that_reconnected": reconnected(pool),
               "log_lines_scanned": lines},
    )
    assert at_kill["after_restart_queued"] + at_kill["after_restart_unacked"] > 0, "nothing was in flight"
    assert alive == pids, "a worker died or was restarted"
    assert reconnected(pool) == WORKERS
    assert not state.dead, state.dead[:3]
    assert verdict.exact, verdict.summary()


def test_redis_without_persistence_loses_what_was_queued_until_the_producer_replays_it(
        pool, chaos_proxy, redis_volatile):
    pool.env["REDIS_URL"] = redis_volatile.url()
    workers = pool.start_many(WORKERS)
    events = make_stream(BURST, seed=6)
    publisher = Publisher(redis_volatile.url())
    clock = Clock()
    publisher.send_all(events)
    publisher.close()
    poll(lambda: applied() >= BURST // 4, 120, "a quarter of the burst applied", 0.1)
    at_kill = kill_and_restart(redis_volatile)
    client = redis_volatile.client()

    # Wait for the workers to finish whatever they still held, until nothing changes any more.
    seen: list[int] = []

    def stable() -> bool:
        seen.append(applied())
        return broker_idle(client) and len(seen) >= 4 and len(set(seen[-4:])) == 1

    poll(stable, 180, "the workers to go idle", 5)
    after_loss = read_state(DB)
    lost = BURST - len(after_loss.ledger)

    # The documented recovery: the producer sends the events of the window again; duplicates are no-ops.
    replay_at = clock()
    publisher = Publisher(redis_volatile.url())
    publisher.send_all(events)
    publisher.close()
    state, verdict = settle(DB, chaos_proxy, client, events, 300, "the replayed events")
    lines = assert_no_secrets(pool, DB)
    record(
        "5b-broker-restart-without-persistence",
        title="Broker restart without persistence",
        command=command_for("tests/chaos/test_broker_restart.py::"
                            "test_redis_without_persistence_loses_what_was_queued_until_the_producer_replays_it"),
        injects=f"as 5, but redis-server with --appendonly no --save \"\"; then all {BURST} events re-sent",
        events_sent=BURST, messages_published=2 * BURST, applied=verdict.applied, duplicated=verdict.duplicated,
        lost=lost, dead_lettered=len(state.dead), drain_s=round(clock() - replay_at, 1),
        extra={**{f"at_kill_{k}": v for k, v in at_kill.items()}, "lost_before_replay": lost,
               "lost_after_replay": len(verdict.lost), "workers_still_running": sum(p.poll() is None for p in workers),
               "log_lines_scanned": lines},
    )
    assert at_kill["after_restart_queued"] == 0 and at_kill["after_restart_unacked"] == 0
    assert lost > 0, "nothing was lost: the scenario did not catch events in the queue"
    assert not state.dead, state.dead[:3]
    assert verdict.exact, verdict.summary()
