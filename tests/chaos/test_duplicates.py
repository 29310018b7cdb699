"""Scenario 1, duplicates: a recorded stream of 2,000 events replayed three times, shuffled, must leave
exactly the ledger and the key budgets of one clean pass."""

from __future__ import annotations

import pytest

from tests.chaos.harness import (
    Clock,
    Publisher,
    assert_no_secrets,
    command_for,
    make_stream,
    read_state,
    record,
    reset,
    settle,
    triple_shuffled,
)
from tests.conftest import TEST_ENV

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]
DB = TEST_ENV["DATABASE_URL"]
EVENTS = 2000
WORKERS = 3


def test_triple_shuffled_replay_equals_one_clean_pass(pool, chaos_proxy, broker):
    events = make_stream(EVENTS, seed=1)
    kinds = {k: sum(1 for e in events if e.task == k) for k in ("events.signup", "events.payment", "events.refund")}
    pool.start_many(WORKERS)
    publisher = Publisher(TEST_ENV["REDIS_URL"])

    clock = Clock()
    publisher.send_all(events)
    clean, clean_verdict = settle(DB, chaos_proxy, broker, events, timeout=300, what="the clean pass")
    clean_s = clock()
    clean_dead = len(clean.dead)
    lines = assert_no_secrets(pool, DB)

    reset(DB, broker, chaos_proxy)
    replay = triple_shuffled(events, seed=11)
    clock = Clock()
    publisher.send_all(replay)
    state, verdict = settle(DB, chaos_proxy, broker, events, timeout=420, what="the shuffled triple replay")
    replay_s = clock()
    lines += assert_no_secrets(pool, DB)
    publisher.close()
    state = read_state(DB, chaos_proxy)

    record(
        "1-duplicates",
        title="Duplicates",
        command=command_for("tests/chaos/test_duplicates.py"),
        injects=f"the {EVENTS}-event stream replayed 3 times in shuffled order ({len(replay)} messages) "
                f"to {WORKERS} workers, compared with one clean in-order pass",
        events_sent=EVENTS, messages_published=len(events) + len(replay), applied=verdict.applied,
        duplicated=verdict.duplicated, lost=len(verdict.lost), dead_lettered=len(state.dead) + clean_dead,
        drain_s=replay_s,
        extra={"event_mix": kinds, "clean_pass_drain_s": clean_s, "accounts": len(state.accounts),
               "ledger_rows": state.rows, "log_lines_scanned": lines},
    )
    assert clean_dead == 0 and not state.dead, (clean.dead[:3], state.dead[:3])
    assert state.ledger == clean.ledger, "the ledger differs from the clean pass"
    assert state.budgets == clean.budgets, "some key's max_budget differs from the clean pass"
    assert verdict.exact and clean_verdict.exact
