"""The beat's jobs have their own queue, taken first: a burst of events cannot starve them."""

from __future__ import annotations

from schemas.routes import FIRST_QUEUES, QUEUES, ROUTES
from tests.fixtures import wait_for
from worker.app import app
from worker.producer import publish_signup

AT = "2026-11-20T10:00:00Z"
BURST = 400


def test_beat_jobs_are_routed_to_the_periodic_queue():
    assert ROUTES["ops.reconcile"] == ROUTES["spend.sync"] == "periodic" and ROUTES["spend.window"] == "spend"
    assert FIRST_QUEUES == ("periodic", "payments") and "periodic" in QUEUES
    schedule = app.conf.beat_schedule
    assert {entry["options"]["queue"] for entry in schedule.values()} == {"periodic"}


def test_reconcile_runs_while_a_burst_of_signups_is_still_queued(workers, proxy, redis_client):
    """400 signups queued ahead, each a slow /key/generate (20 ms): the reconcile sent after them
    runs before the backlog is through, on the one worker process there is."""
    proxy.delays["/key/generate"] = 0.02
    for n in range(BURST):
        publish_signup({"user_id": f"burst-{n:04d}", "occurred_at": AT})
    app.send_task("ops.reconcile")
    workers.start(concurrency=1)

    def reconciled() -> bool:
        return "reconcile: checked=" in workers.output()

    wait_for(reconciled, 60, "the reconcile run's report")
    waiting = redis_client.llen("signups")
    assert waiting > 0, "the reconcile ran only after the whole burst"
    # Taken first of all, though queued last: the broker's take tries the periodic queue first.
    received = [line for line in workers.output().splitlines() if "] received" in line]
    assert "Task ops.reconcile[" in received[0], received[:3]
    wait_for(lambda: redis_client.llen("signups") == 0, 120, "the burst to be consumed")
