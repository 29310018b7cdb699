"""Spend filed after a grant's expiry was settled, but dated before it: the expiry gives some back.

A grant is settled when the spend cursor passes its expiry (worker/credits/expiry.py). A usage
row dated before the expiry can still arrive later: a long streaming call, the proxy's batch
write, a window's verification (up to SPEND_VERIFY_S), reconcile's repair. Had it been on time, it
would have burned the expiring grant, and less of that grant would have left. So instead of
burning paid credit, the grant's expiry is corrected: an append-only `expiry` entry of the grant,
crediting back what the expiry took too much. The user's remaining credit is then what it would
have been had the row arrived on time. grant_burn (migration 0010) counts every `expiry` entry
of a grant as what left it.

Which accounts to look at: entries written since the last run (a ledger id watermark,
worker/credits/expiry_cursor.py) that are dated before one of the account's expiry entries. The scan's cost is the
new usage since the last run, never an account's history.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from worker.credits import expiry_cursor, ledger
from worker.models import Account


def accounts_with_late_spend(session: Session) -> tuple[list[str], int]:
    """(accounts with usage written after one of their expiries but dated before it, the
    watermark to store once they are corrected)."""
    after = expiry_cursor.load(session).late_after
    # A correction found twice (the watermark lags) is written once: it is a difference of sums.
    upto = expiry_cursor.committed_upto(session, after)
    # Not `x.id < u.id`: an insert takes its id before it waits for the account lock an expiry
    # holds, so a row the expiry could not see can carry a lower id. A row the expiry did see
    # costs only a grant_burn that finds nothing to give back. Any entry, not only usage: a
    # backdated adjustment changes what was left of a grant too, and must do so whether or not
    # some late usage happens to bring the account here.
    users = session.execute(text(
        "SELECT DISTINCT u.user_id FROM ledger_entries u "
        "JOIN ledger_entries x ON x.user_id = u.user_id AND x.kind = 'expiry' AND u.occurred_at < x.occurred_at "
        "WHERE u.id > :after AND u.kind <> 'expiry' ORDER BY 1"), {"after": after}).scalars().all()
    return list(users), upto


def correct_account(session: Session, user_id: str) -> dict[str, Decimal]:
    """Append the corrections of this account's settled grants; returns USD given back by grant.
    The caller holds no lock; this takes the account's, as the expiry itself does."""
    session.execute(select(Account.user_id).where(Account.user_id == user_id).with_for_update())
    rows = session.execute(text(
        "SELECT b.grant_key, b.expired_left, -sum(x.credit_usd), count(x.id) "
        "FROM grant_burn(:u, now()) b "
        "JOIN ledger_entries x ON x.grant_key = b.grant_key AND x.kind = 'expiry' AND x.user_id = :u "
        "WHERE b.expired_left IS NOT NULL GROUP BY b.grant_key, b.expired_left"), {"u": user_id}).all()
    given = {}
    for grant_key, should_leave, left, entries in rows:
        back = ledger.money(Decimal(left) - Decimal(should_leave))
        if back <= 0:
            # Never taken further: spend is only ever added, so an expiry can only have taken
            # too much. Less left than it should would need usage to vanish from the ledger.
            continue
        # The nth entry of this grant's expiry: two runs finding the same difference under the
        # account lock write it once.
        key = f"expiry:{grant_key}:late:{entries}"
        if ledger.record(session, user_id=user_id, kind="expiry", idempotency_key=key, grant_key=grant_key,
                         credit=back, occurred_at=_expired_at(session, grant_key),
                         details={"corrects": f"expiry:{grant_key}", "given_back_usd": format(back, "f")}):
            given[grant_key] = back
    return given


def _expired_at(session: Session, grant_key: str) -> datetime:
    return session.execute(text("SELECT occurred_at FROM ledger_entries WHERE idempotency_key = :k"),
                           {"k": f"expiry:{grant_key}"}).scalar_one()
