"""Compare every key on the proxy with the ledger, and with fix=True make the proxy agree.

The ledger is the truth: a key's max_budget must equal the account's credited total. Drift
comes from lost pushes, hand edits on the proxy, or the proxy writing a stale cached key back
(BerriAI/litellm#25553). Spend is compared too: where the proxy's is higher than the ledger's
(a row filed beyond the spend sync's verification horizon), the key's missing rows are read
and debited (worker.spend.repair) with fix=True, and only what is left is reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker import proxy
from worker.credits import ledger
from worker.credits.accounts import sync_key
from worker.db import Lock, exclusive, session_scope
from worker.errors import Rejected
from worker.models import Account, LedgerEntry
from worker.spend.repair import repair_key, unsynced_explains

log = logging.getLogger(__name__)
TOLERANCE = Decimal("1e-6")
BATCH = 500
# A proxy that fails this many accounts in a row is down: stop instead of timing out on each.
MAX_CONSECUTIVE_FAILURES = 5


@dataclass(frozen=True)
class Drift:
    user_id: str
    proxy: Decimal | None
    ledger: Decimal


@dataclass
class Report:
    checked: int = 0
    drifted: list[Drift] = field(default_factory=list)
    fixed: int = 0
    pending: list[str] = field(default_factory=list)
    spend_mismatches: list[Drift] = field(default_factory=list)
    spend_repaired: list[str] = field(default_factory=list)  # accounts whose missing usage was debited
    errors: list[str] = field(default_factory=list)


def reconcile_alone(fix: bool) -> Report | None:
    """reconcile() under the reconcile lock, as the beat and the CLI run it; None (nothing done)
    while another run holds the lock."""
    with exclusive(Lock.RECONCILE) as mine:
        if not mine:
            log.info("reconcile already running elsewhere; skipped")
            return None
        return reconcile(fix=fix)


def log_report(report: Report) -> None:
    summary = {"checked": report.checked, "drifted": len(report.drifted), "fixed": report.fixed,
               "pending": len(report.pending), "spend_mismatches": len(report.spend_mismatches),
               "spend_repaired": len(report.spend_repaired),
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


def reconcile(fix: bool = False, batch: int = BATCH) -> Report:
    """One pass over all accounts with a key, `batch` at a time by user_id (keyset paging)."""
    report = Report()
    after, failures = "", 0
    while failures < MAX_CONSECUTIVE_FAILURES:
        with session_scope() as session:
            page = session.execute(
                select(Account.user_id, Account.key_status)
                .where(Account.user_id > after, Account.key_status.in_(("active", "pending")))
                .order_by(Account.user_id).limit(batch)
            ).all()
        if not page:
            return report
        for user_id, status in page:
            report.checked += 1
            try:
                if status == "pending":
                    _pending(user_id, fix, report)
                else:
                    _check(user_id, fix, report)
                failures = 0
            except (proxy.ProxyError, Rejected) as exc:
                report.errors.append(f"{user_id}: {exc}")
                failures = failures + 1 if isinstance(exc, proxy.TransientProxyError) else 0
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    report.errors.append(f"stopped after {failures} proxy failures in a row; "
                                         "accounts after this one were not checked")
                    break
        after = page[-1].user_id
    return report


def _pending(user_id: str, fix: bool, report: Report) -> None:
    """A key never provisioned (its signup or payment task is still retrying, or was lost)."""
    report.pending.append(user_id)
    if fix and sync_key(user_id) is not None:
        report.fixed += 1


def _check(user_id: str, fix: bool, report: Report) -> None:
    with session_scope() as session:
        # Locked (shared when only reading) so an in-flight sync_key push, which holds the row
        # for update, finishes first: the ledger and the proxy are then read at rest.
        account = session.execute(
            select(Account).where(Account.user_id == user_id, Account.key_status == "active")
            .with_for_update(read=not fix)
        ).scalar_one_or_none()
        if account is None:  # changed since the page was read
            return
        credited = ledger.credited_total(session, user_id)
        spent = _spent(session, user_id)
        info = proxy.key_info(account.key_hash).info
        if info.status == "deleted":
            raise Rejected("the key is deleted on the proxy; it needs a new key, not a budget")
        spend_differs = (abs(info.spend - spent) > TOLERANCE
                         and not unsynced_explains(session, account.key_hash, info.spend))
        key_hash, created = account.key_hash, account.created_at
        drifted = info.max_budget is None or abs(info.max_budget - credited) > TOLERANCE
        if drifted:
            report.drifted.append(Drift(user_id, info.max_budget, credited))
        if drifted and fix:
            # Forget what we believe we pushed, so sync_key pushes again (under its own lock,
            # taken after this commit) whatever the ledger holds by then.
            account.budget_pushed_usd = None
    if spend_differs and fix and info.spend > spent:
        # After the commit: the repair's debits need the account row this check held.
        if repair_key(user_id, key_hash, created, datetime.now(UTC)).debited:
            report.spend_repaired.append(user_id)
        with session_scope() as session:
            spent = _spent(session, user_id)
        spend_differs = abs(info.spend - spent) > TOLERANCE
    if spend_differs:
        report.spend_mismatches.append(Drift(user_id, info.spend, spent))
    if drifted and fix:
        sync_key(user_id)
        report.fixed += 1


def _spent(session: Session, user_id: str) -> Decimal:
    return Decimal(session.execute(
        select(func.coalesce(func.sum(LedgerEntry.spent_usd), 0))
        .where(LedgerEntry.user_id == user_id, LedgerEntry.kind == "usage")
    ).scalar_one())
