"""`spend.sync` (beat, every SPEND_SYNC_INTERVAL_S, queue `periodic`), `spend.window` (queue `spend`)
and `spend.retention` (beat, hourly, queue `periodic`).

spend.sync plans and sends the windows due; each spend.window reads or verifies one of them, on
whichever worker takes it. A proxy or database fault is retried by the task policy; a window
whose reader died is read by the next one once its lease runs out.
"""

from typing import Any

from schemas.messages import SpendWindow
from worker.delivery.policy import beat_task, event_task
from worker.spend import retention as spend_retention
from worker.spend import sync as spend_sync


@beat_task("spend.sync")
def sync() -> None:
    spend_sync.dispatch()


@event_task("spend.window")
def window(event: dict[str, Any]) -> None:
    parsed = SpendWindow.model_validate(event)
    spend_sync.read_window(parsed.start, parsed.run_id, parsed.reader)


@beat_task("spend.retention")
def retention() -> None:
    spend_retention.delete_old()
