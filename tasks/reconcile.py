"""`ops.reconcile` (beat, queue `periodic`): repair drift between the ledger and the proxy's budgets."""

from worker.credits.reconcile import log_report, reconcile_alone
from worker.delivery.policy import beat_task


@beat_task("ops.reconcile")
def reconcile_task() -> None:
    report = reconcile_alone(fix=True)
    if report is not None:
        log_report(report)
