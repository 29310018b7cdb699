"""Expiring promotional credit: at a grant's expiry its unspent part leaves the balance.

A grant expires only once the spend sync's cursor has passed its expiry: all usage from before
the expiry is then in the ledger, and what is left of the grant (grant_burn in migration 0008:
spend burns the grant that expires soonest first, then the oldest) is final. It leaves as one
`expiry` entry keyed `expiry:<grant key>`, even when nothing is left, so each grant is settled
once; then the key's max_budget falls to the new credited total. Spend dated before the expiry
that arrives after it was settled corrects it (worker/credits/expiry_corrections.py). The beat
runs this under its own lock, as reconcile does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select, text

from worker.alerts.checks import check_alerts
from worker.credits import expiry_corrections, expiry_cursor, ledger
from worker.credits.accounts import sync_key
from worker.db import Lock, exclusive, session_scope
from worker.errors import Rejected
from worker.models import Account
from worker.proxy import ProxyError
from worker.spend.runs import cursor

log = logging.getLogger(__name__)


@dataclass
class Report:
    until: datetime | None = None
    expired: dict[str, Decimal] = field(default_factory=dict)  # grant key -> USD that left
    given_back: dict[str, Decimal] = field(default_factory=dict)  # grant key -> USD a correction returned
    errors: list[str] = field(default_factory=list)


def expiry_key(grant_key: str) -> str:
    return f"expiry:{grant_key}"


def expire_alone() -> Report | None:
    """expire_due() under the expiry lock; None while another run holds it."""
    with exclusive(Lock.CREDIT_EXPIRY) as mine:
        if not mine:
            log.info("credit expiry already running elsewhere; skipped")
            return None
        return expire_due()


def expire_due() -> Report:
    """Settle every grant whose expiry the spend sync cursor has passed. A failing account is
    reported and left for the next run; a fault common to all (the database) raises."""
    report = Report()
    correct_late_spend(report)
    with session_scope() as session:
        found = cursor(session)
        if found is None:
            return report
        until = found.position
        since = expiry_cursor.load(session)
        upto = expiry_cursor.committed_upto(session, since.grants_after)
        # Grants expiring since the last run, and grants written since it (a late signup's grant
        # can expire in the past): each an index range, not every grant that ever expired.
        users = session.execute(text(
            f"SELECT g.user_id FROM ledger_entries g WHERE g.expires_at > :since AND g.expires_at <= :until "
            f"AND {UNSETTLED} UNION "
            f"SELECT g.user_id FROM ledger_entries g WHERE g.id > :after AND g.expires_at <= :until AND {UNSETTLED}"
        ), {"since": since.settled_until or datetime.min.replace(tzinfo=UTC), "until": until,
            "after": since.grants_after}).scalars().all()
    report.until = until
    for user_id in sorted(users):
        try:
            report.expired.update(expire_account(user_id, until))
        except (ProxyError, Rejected) as exc:
            # One account's push must not hold up the others: its entries are in, and reconcile
            # pushes its budget later.
            log.warning("credit expiry of %s failed: %s", user_id, exc)
            report.errors.append(f"{user_id}: {exc}")
    # Every due grant is settled now (a failed push comes after its entry is written).
    with session_scope() as session:
        expiry_cursor.store_settled(session, until, upto)
    return report


UNSETTLED = "NOT EXISTS (SELECT 1 FROM ledger_entries x WHERE x.idempotency_key = 'expiry:' || g.grant_key)"


def correct_late_spend(report: Report) -> None:
    """Give back what expiries took too much, now that spend dated before them has arrived."""
    with session_scope() as session:
        users, upto = expiry_corrections.accounts_with_late_spend(session)
    for user_id in users:
        with session_scope() as session:
            given = expiry_corrections.correct_account(session, user_id)
        if given:
            log.warning("expiry corrected for spend filed late", extra={
                "user_id": user_id, "given_back": {k: str(v) for k, v in given.items()}})
            report.given_back.update(given)
        try:
            sync_key(user_id, provision_unsigned=False)
            check_alerts([user_id])
        except (ProxyError, Rejected) as exc:  # the correction is in; reconcile pushes the budget
            log.warning("budget push after an expiry correction of %s failed: %s", user_id, exc)
            report.errors.append(f"{user_id}: {exc}")
    with session_scope() as session:
        expiry_cursor.store_late(session, upto)


def expire_account(user_id: str, until: datetime) -> dict[str, Decimal]:
    """Write the expiry entries of this account's grants expired by `until`; returns what left."""
    written = {}
    with session_scope() as session:
        # Locked as refunds and adjustments lock it: none of them changes a grant mid-count.
        session.execute(select(Account.user_id).where(Account.user_id == user_id).with_for_update())
        due = session.execute(text(
            "SELECT grant_key, expires_at, expired_left FROM grant_burn(:u, :until) "
            "WHERE expires_at <= :until AND expired_left IS NOT NULL"
        ), {"u": user_id, "until": until}).all()
        for grant_key, expires_at, left in due:
            left = ledger.money(Decimal(left))
            if ledger.record(session, user_id=user_id, kind="expiry", idempotency_key=expiry_key(grant_key),
                             grant_key=grant_key, credit=-left, occurred_at=expires_at,
                             details={"expired_usd": format(left, "f")}):
                written[grant_key] = left
    if written:
        log.info("credit expired", extra={"user_id": user_id, "expired": {k: str(v) for k, v in written.items()}})
    sync_key(user_id, provision_unsigned=False)  # an account with no signup gets its key from the signup
    check_alerts([user_id])
    return written
