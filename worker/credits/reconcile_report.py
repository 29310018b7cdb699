"""What one reconcile run found: drift, spend differences, repairs, and the keys it could not check.

A key that cannot be checked (unreadable on the proxy, deleted there, refused a push) is one entry
in `errors`, one log line and one count of credits_reconcile_key_errors_total; the run goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal

from worker import metrics
from worker.credits import audit
from worker.money import PROXY_TOLERANCE
from worker.proxy import PermanentProxyError

log = logging.getLogger("worker.credits.reconcile")


def differs(proxy: Decimal | None, ledger: Decimal) -> bool:
    return proxy is None or abs(proxy - ledger) > PROXY_TOLERANCE


@dataclass(frozen=True)
class Drift:
    user_id: str
    proxy: Decimal | None
    ledger: Decimal


@dataclass
class Report:
    full: bool = True  # every key read, or only those changed since the last pass
    stopped: bool = False  # a fault stopped the pass: what it did not reach waits for the next one
    checked: int = 0
    drifted: list[Drift] = field(default_factory=list)
    fixed: int = 0
    pending: list[str] = field(default_factory=list)
    spend_mismatches: list[Drift] = field(default_factory=list)
    spend_repaired: list[str] = field(default_factory=list)  # accounts whose missing usage was debited
    # Keys whose spend counter had fallen below the ledger's usage (or had a budget_duration), set back.
    spend_restored: list[Drift] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    key_errors: int = 0  # errors that concern one key; the others stopped (part of) the run
    ledger_audit: audit.AuditReport | None = None  # running totals of a slice of accounts vs the ledger

    def key_error(self, who: str, error: Exception | str, check: str) -> None:
        """One key that could not be checked or repaired; every other key still is."""
        text = str(error) if not isinstance(error, Exception) or isinstance(error, PermanentProxyError) \
            else f"{type(error).__name__}: {error}"
        self.errors.append(f"{who}: {text}"[:600])
        self.key_errors += 1
        metrics.reconcile_key_error(check)
        log.warning("reconcile could not check a key (%s): %s: %s", check, who, text,
                    extra={"user_id": who, "check": check})

    def run_error(self, text: str) -> None:
        self.stopped = True
        self.errors.append(text)
        log.error("reconcile stopped: %s", text)


def log_report(report: Report) -> None:
    summary = {"checked": report.checked, "drifted": len(report.drifted), "fixed": report.fixed,
               "pending": len(report.pending), "spend_mismatches": len(report.spend_mismatches),
               "spend_repaired": len(report.spend_repaired), "spend_restored": len(report.spend_restored),
               "key_errors": report.key_errors,
               "errors": len(report.errors), "pass": "full" if report.full else "changed"}
    level = (logging.WARNING if report.drifted or report.spend_mismatches or report.spend_restored or report.errors
             else logging.INFO)
    log.log(level, "reconcile: %s", " ".join(f"{k}={v}" for k, v in summary.items()), extra=summary)
    for drift in report.drifted:
        log.warning("budget drift fixed", extra={"user_id": drift.user_id, "proxy": str(drift.proxy),
                                                 "ledger": str(drift.ledger)})
    for restored in report.spend_restored:
        log.warning("spend counter restored", extra={"user_id": restored.user_id, "proxy": str(restored.proxy),
                                                     "ledger": str(restored.ledger)})
    for mismatch in report.spend_mismatches:
        log.warning("spend differs", extra={"user_id": mismatch.user_id, "proxy": str(mismatch.proxy),
                                            "ledger": str(mismatch.ledger)})
    if report.ledger_audit is not None:
        audit.log_report(report.ledger_audit)
