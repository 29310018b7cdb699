"""`ops.reconcile` (beat, queue `spend`): repair drift between the ledger and the proxy's budgets."""

import logging

from worker.credits.reconcile import reconcile
from worker.db import session_scope, try_advisory_xact_lock
from worker.delivery.policy import beat_task

log = logging.getLogger(__name__)
# Arbitrary but fixed; distinct from Settings.spend_lock_id.
RECONCILE_LOCK_ID = 0x5EC0


@beat_task("ops.reconcile")
def reconcile_task() -> None:
    # The lock's transaction stays open for the whole run, so a second run (a slow pass
    # overlapping the next beat, or two beats) skips instead of doubling the proxy load.
    with session_scope() as session:
        if not try_advisory_xact_lock(session, RECONCILE_LOCK_ID):
            log.info("reconcile already running elsewhere; skipped")
            return
        report = reconcile(fix=True)
    summary = {"checked": report.checked, "drifted": len(report.drifted), "fixed": report.fixed,
               "pending": len(report.pending), "spend_mismatches": len(report.spend_mismatches),
               "errors": len(report.errors)}
    level = logging.WARNING if report.drifted or report.spend_mismatches or report.errors else logging.INFO
    log.log(level, "reconcile: %s", " ".join(f"{k}={v}" for k, v in summary.items()), extra=summary)
    for drift in report.drifted:
        log.warning("budget drift fixed", extra={"user_id": drift.user_id, "proxy": str(drift.proxy),
                                                 "ledger": str(drift.ledger)})
    for mismatch in report.spend_mismatches:
        log.warning("spend differs", extra={"user_id": mismatch.user_id, "proxy": str(mismatch.proxy),
                                            "ledger": str(mismatch.ledger)})
    for error in report.errors:
        log.warning("reconcile error: %s", error)
