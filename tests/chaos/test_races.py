"""Scenario 6, races, on 4 worker processes: 100 payments for one account; a payment and its refund at
the same instant; a signup and a payment for a new user at the same instant; two beats running the
spend sync at once. Messages land on the queues in one MULTI, so idle workers take them together."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.chaos.harness import (
    Clock,
    Event,
    Pool,
    Publisher,
    assert_no_secrets,
    command_for,
    plain_url,
    poll,
    read_state,
    record,
    settle,
    worker_env,
)
from tests.conftest import TEST_ENV
from tests.fixtures import wait_for
from worker.db import Lock

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]
DB = TEST_ENV["DATABASE_URL"]
WORKERS = 4
ROUNDS = 3
PER_ROUND = 20
SYNC_FROM = datetime.now(UTC) - timedelta(minutes=45)


@pytest.fixture(scope="module")
def race_pool(tmp_path_factory: pytest.TempPathFactory, chaos_proxy_server) -> Iterator[Pool]:
    env = worker_env(chaos_proxy_server.url, SPEND_SYNC_START=SYNC_FROM.isoformat(), SPEND_SETTLE_S="5",
                     SPEND_WINDOW_S="10", SPEND_PAGE_SIZE="100", SPEND_SYNC_INTERVAL_S="1",
                     RECONCILE_INTERVAL_S="3600")
    pool = Pool(tmp_path_factory.mktemp("races"), env)
    pool.start_many(WORKERS)
    yield pool
    pool.stop_all()


def signup(user: str) -> Event:
    return Event("events.signup", {"user_id": user, "occurred_at": "2026-11-20T10:00:00Z"}, f"signup:{user}", user)


def payment(user: str, ref: str, minor: int = 1500) -> Event:
    return Event("events.payment", {"reference": ref, "user_id": user, "amount_minor": minor, "currency": "USD",
                                    "paid_at": "2026-11-20T11:00:00Z"}, f"payment:paystack:{ref}", user)


def refund(user: str, paid: str, ref: str, minor: int) -> Event:
    return Event("events.refund", {"refund_reference": ref, "payment_reference": paid, "user_id": user,
                                   "amount_minor": minor, "currency": "USD", "refunded_at": "2026-11-20T12:00:00Z"},
                 f"refund:paystack:{ref}", user)


def workers_involved(pool: Pool, marker: str) -> int:
    return sum(1 for path in pool.logs if marker in path.read_text(errors="replace"))


def run_rounds(pool: Pool, chaos_proxy, broker, make_round) -> tuple[list[Event], float]:
    """Each round lands at once and must be exact before the next."""
    everything: list[Event] = []
    clock = Clock()
    publisher = Publisher(TEST_ENV["REDIS_URL"])
    for r in range(ROUNDS):
        batch = make_round(r)
        everything += batch
        publisher.simultaneous(batch)
        settle(DB, chaos_proxy, broker, everything, 120, f"round {r + 1} to be exact")
    publisher.close()
    return everything, clock()


def test_hundred_payments_for_one_account_across_four_workers(race_pool, chaos_proxy, broker):
    user = "hot@example.com"
    payments = [payment(user, f"hot-{i:03d}", (500, 1500, 2000)[i % 3]) for i in range(100)]
    # With its signup, which makes the key (a payment before its signup makes none).
    events = [signup(user), *payments]
    clock = Clock()
    publisher = Publisher(TEST_ENV["REDIS_URL"])
    publisher.simultaneous(events)
    publisher.close()
    state, verdict = settle(DB, chaos_proxy, broker, events, 120, "100 payments for one account")
    took = clock()
    assert_no_secrets(race_pool, DB)
    record(
        "6a-races-one-account",
        title="Races: 100 payments for one account",
        command=command_for("tests/chaos/test_races.py::test_hundred_payments_for_one_account_across_four_workers"),
        injects=f"100 payments and the signup of one new account pushed in one MULTI to {WORKERS} idle workers",
        events_sent=len(events), messages_published=len(events), applied=verdict.applied, duplicated=verdict.duplicated,
        lost=len(verdict.lost), dead_lettered=len(state.dead), drain_s=took,
        extra={"workers_that_took_part": workers_involved(race_pool, "hot-0"), "proxy_keys": len(state.budgets),
               "final_budget": str(state.budgets.get(state.accounts[user]["alias"]))},
    )
    assert state.totals[user] == 2 + sum(Decimal(e.body["amount_minor"]) / 50 for e in payments)  # credit 2x
    assert len(state.budgets) == 1
    assert not state.dead and verdict.exact, verdict.summary()


def test_payment_and_its_refund_at_the_same_instant(race_pool, chaos_proxy, broker):
    def make_round(r: int) -> list[Event]:
        batch = []
        for i in range(PER_ROUND):
            user = f"pr{r}-{i:02d}@example.com"
            minor = (500, 1500, 2000)[i % 3]
            batch += [payment(user, f"pr{r}-{i:02d}", minor),
                      refund(user, f"pr{r}-{i:02d}", f"pr{r}-{i:02d}-r", minor if i % 2 else minor // 2)]
        return batch

    events, took = run_rounds(race_pool, chaos_proxy, broker, make_round)
    state = read_state(DB, chaos_proxy)
    assert_no_secrets(race_pool, DB)
    waited = sum(1 for line in race_pool.log_lines() if "retry" in line and "refund of unknown payment" in line)
    record(
        "6b-races-payment-and-refund",
        title="Races: a payment and its refund at the same instant",
        command=command_for("tests/chaos/test_races.py::test_payment_and_its_refund_at_the_same_instant"),
        injects=f"{ROUNDS} rounds of {PER_ROUND} (payment, refund) pairs for new accounts, each round in one MULTI, "
                f"{WORKERS} workers",
        events_sent=len(events), messages_published=len(events), applied=len(state.ledger), duplicated=0,
        lost=len(events) - len(state.ledger), dead_lettered=len(state.dead), drain_s=took,
        extra={"refunds_that_arrived_before_their_payment": waited},
    )
    assert not state.dead, state.dead[:3]


def test_signup_and_payment_for_a_new_user_at_the_same_instant(race_pool, chaos_proxy, broker):
    def make_round(r: int) -> list[Event]:
        batch = []
        for i in range(PER_ROUND):
            user = f"sp{r}-{i:02d}@example.com"
            batch += [signup(user), payment(user, f"sp{r}-{i:02d}", (500, 1500, 2000)[i % 3])]
        return batch

    events, took = run_rounds(race_pool, chaos_proxy, broker, make_round)
    state = read_state(DB, chaos_proxy)
    assert_no_secrets(race_pool, DB)
    record(
        "6c-races-signup-and-payment",
        title="Races: signup and payment for a new user at the same instant",
        command=command_for("tests/chaos/test_races.py::test_signup_and_payment_for_a_new_user_at_the_same_instant"),
        injects=f"{ROUNDS} rounds of {PER_ROUND} (signup, payment) pairs for new users, each round in one MULTI, "
                f"{WORKERS} workers",
        events_sent=len(events), messages_published=len(events), applied=len(state.ledger), duplicated=0,
        lost=len(events) - len(state.ledger), dead_lettered=len(state.dead), drain_s=took,
        extra={"accounts": len(state.accounts), "proxy_keys": len(state.budgets)},
    )
    assert len(state.budgets) == len(state.accounts) == ROUNDS * PER_ROUND
    assert not state.dead, state.dead[:3]


def spend_counts() -> dict[str, object]:
    with psycopg.connect(plain_url(DB)) as conn:
        stored = conn.execute("SELECT count(*) FROM spend_logs").fetchone()[0]
        position = (conn.execute("SELECT position FROM spend_sync_cursor").fetchone() or [None])[0]
        runs = dict(conn.execute("SELECT status, count(*) FROM spend_sync_runs GROUP BY status").fetchall())
    return {"stored": stored, "position": position, "runs": runs}


def test_two_beats_running_spend_sync_at_once(race_pool, chaos_proxy, broker, tmp_path: Path):
    users = [f"beat{i}@example.com" for i in range(10)]
    signups = [signup(u) for u in users]
    publisher = Publisher(TEST_ENV["REDIS_URL"])
    publisher.send_all(signups)
    publisher.close()
    state, _ = settle(DB, chaos_proxy, broker, signups, 120, "the accounts")
    hashes = [state.accounts[u]["hash"] for u in users]
    # Rows that show up in windows the earlier tests already read and verified, within the last
    # ten minutes: windows that young are verified again within half a minute.
    last = datetime.now(UTC) - timedelta(minutes=1)
    rows, first = 2400, max(SYNC_FROM + timedelta(minutes=5), last - timedelta(minutes=9))
    for i in range(rows):
        chaos_proxy.add_spend(hashes[i % len(hashes)], 0.01, first + (last - first) / rows * i, request_id=f"b-{i:05d}")

    pool = Pool(tmp_path, race_pool.env)
    clock = Clock()
    # The lock held here until a run has been turned away: a sync run takes milliseconds and the
    # beat's queue is served first, so two beats' runs need not meet by themselves.
    holder = psycopg.connect(plain_url(DB), autocommit=True)
    assert holder.execute("SELECT pg_try_advisory_lock(%s)", (int(Lock.SPEND_SYNC),)).fetchone()[0]
    beats = [pool.spawn_beat(), pool.spawn_beat()]
    try:
        wait_for(lambda: all("Sending due task spend-sync" in p.read_text(errors="replace") for p in pool.logs),
                 60, "both beats to send spend.sync")
        wait_for(lambda: any("spend sync skipped" in line for line in race_pool.log_lines()), 60,
                 "a spend sync turned away by the lock")
        holder.close()
        poll(lambda: (c := spend_counts())["stored"] == rows and c["position"] >= last, 180,
             "every spend row stored and the cursor past the last one")
        synced_at = clock()
        # Let both beats go on for a while: later runs re-read the look-back and must change nothing.
        runs_then = sum(spend_counts()["runs"].values())
        poll(lambda: sum(spend_counts()["runs"].values()) >= runs_then + 5, 60, "five more runs")
    finally:
        holder.close()
        for beat in beats:
            pool.kill(beat)
    final = read_state(DB, chaos_proxy)
    sends = sum(p.read_text(errors="replace").count("Sending due task spend-sync") for p in pool.logs)
    skipped = sum(1 for line in race_pool.log_lines() if "spend sync skipped: another spend sync is running" in line)
    counts = spend_counts()
    lines = assert_no_secrets(race_pool, DB, extra_logs=pool.logs)
    record(
        "6d-races-two-beats",
        title="Races: two beats running spend sync at once",
        command=command_for("tests/chaos/test_races.py::test_two_beats_running_spend_sync_at_once"),
        injects=f"two `celery beat` processes each sending spend.sync every 1 s to {WORKERS} workers, "
                f"over {rows} spend-log rows",
        events_sent=rows, messages_published=sends, applied=len(final.usage), duplicated=len(final.usage) - rows,
        lost=rows - counts["stored"], dead_lettered=len(final.dead), drain_s=synced_at,
        extra={"spend_sync_sends": sends, "runs_skipped_for_the_lock": skipped, "runs": counts["runs"],
               "log_lines_scanned": lines},
    )
    assert skipped > 0, "the two beats never overlapped"
    assert counts["stored"] == rows and len(final.usage) == rows
    assert sum(final.usage.values()) == Decimal("0.01") * rows
    assert not final.dead
