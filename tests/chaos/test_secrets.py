"""Scenario 8, secrets: every chaos scenario runs its workers at DEBUG and ends by searching all their
log lines and every row of the database for the master key, the encryption key and each account's
virtual key (tests.chaos.harness.assert_no_secrets). This test adds JSON logs and the proxy error
most likely to carry a key: a FastAPI-style 422 that echoes the request body, key included."""

from __future__ import annotations

import pytest

from tests.chaos.harness import (
    SCANNED,
    Clock,
    Publisher,
    assert_no_secrets,
    command_for,
    make_stream,
    poll,
    read_state,
    record,
    settle,
)
from tests.conftest import TEST_ENV
from tests.fixtures import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]
DB = TEST_ENV["DATABASE_URL"]
EVENTS = 300
WORKERS = 2


def test_no_secret_in_debug_logs_or_database_through_proxy_errors_that_echo_the_key(pool, chaos_proxy, broker):
    pool.env.update({"LOG_FORMAT": "json", "TASK_MAX_RETRIES": "2", "RETRY_BACKOFF_MAX_S": "1"})
    pool.start_many(WORKERS)
    events = make_stream(EVENTS, seed=8)
    publisher = Publisher(TEST_ENV["REDIS_URL"])
    clock = Clock()
    chaos_proxy.mode = "echo"  # every key write fails with a 422 echoing its body
    publisher.send_all(events[:100])
    wait_for(lambda: chaos_proxy.requests.get("/key/generate", 0) >= 20, 60, "echoed key writes")
    chaos_proxy.mode = "error"
    publisher.send_all(events[100:200])
    wait_for(lambda: chaos_proxy.requests.get("/key/generate", 0) >= 60, 60, "failing key writes")
    chaos_proxy.mode = "ok"
    publisher.send_all(events[200:])
    publisher.close()
    # A 4xx is not retried: those events wait in dead letters. Once every message is settled,
    # the secrets check runs, then the letters are replayed and the state must be exact.
    poll(lambda: broker.llen("signups") + broker.llen("payments") + broker.hlen("unacked") == 0, 120,
         "the queues to empty", 0.5)
    letters = read_state(DB).dead
    leaked_before_replay: str | None = None
    try:
        assert_no_secrets(pool, DB)
    except AssertionError as exc:
        leaked_before_replay = str(exc)
    from worker.delivery.replay import replay

    for letter in letters:
        replay(letter["id"])
    state, verdict = settle(DB, chaos_proxy, broker, events, 180, "every event applied after the replays")
    lines = assert_no_secrets(pool, DB)
    record(
        "8-secrets",
        title="Secrets",
        command=command_for("tests/chaos/test_secrets.py"),
        injects=f"{EVENTS} events with JSON logs at DEBUG while the proxy answers key writes with a 422 echoing "
                f"the request body (virtual key included), then 500s; the dead letters replayed; plus the same "
                f"search at the end of every other scenario",
        events_sent=EVENTS, messages_published=EVENTS + len(letters), applied=verdict.applied,
        duplicated=verdict.duplicated, lost=len(verdict.lost), dead_lettered=len(letters), drain_s=clock(),
        extra={"log_lines_scanned_here": lines, "log_lines_scanned_this_session": SCANNED["lines"],
               "scenarios_checked_this_session": SCANNED["tests"], "echoed_key_writes": chaos_proxy.requests,
               "secrets_found": leaked_before_replay or 0},
    )
    assert leaked_before_replay is None, leaked_before_replay
    assert letters, "no event was dead-lettered: the echo fault hit nothing"
    assert verdict.exact, verdict.summary()
