"""The worker's own Celery app with one more task, `bench.noop`, which does nothing: bench.event_path
runs it through a worker configured exactly like ours to measure what Celery itself costs per
message (broker round trips, acks, task events for Flower) before any of our work.

    celery -A bench.noop_app worker -Q payments -c 1
"""

from typing import Any

from worker.app import app


@app.task(name="bench.noop", acks_late=True, ignore_result=True)
def noop(event: Any = None) -> None:
    return None
