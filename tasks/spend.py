"""`spend.sync` on queue `spend`, sent by beat every SPEND_SYNC_INTERVAL_S.

A run that finds another one holding the lock returns at once; a proxy or database fault is
retried by the task policy, and the next run re-reads from the cursor anyway.
"""

from worker.delivery.policy import beat_task
from worker.spend import sync as spend_sync


@beat_task("spend.sync")
def sync() -> None:
    spend_sync.sync()
