"""`ops.expire_credit` (beat, queue `periodic`): expired grants' unspent credit leaves the balance."""

from worker.credits.expiry import expire_alone
from worker.delivery.policy import beat_task


@beat_task("ops.expire_credit")
def expire_credit() -> None:
    expire_alone()
