"""`spend.sync` on queue `spend`, sent by beat every SPEND_SYNC_INTERVAL_S.

A run that finds another one holding the lock returns at once; a proxy or database fault is
retried by the task policy, and the next run re-reads from the cursor anyway.
"""

from worker import spend_sync
from worker.task_base import beat_task


@beat_task("spend.sync")
def sync() -> None:
    spend_sync.sync()
