"""A user redeems a promo code: its amount credited once per (code, user), within its expiry and uses.

Every redemption of one code locks the code's row, in the transaction that writes the promo
entry and counts the use: many users redeeming one code at the same instant are served one at a
time, so `max_uses` is never passed, and a use is counted exactly when its credit is written.

The event's `redeemed_at` is the producer's claim: it is recorded, and tells a redelivery from a
second typing of the code, but it decides nothing. The worker's clock when it applies the
redemption decides whether the code has expired, and dates the credit (never before the code
was made), so no claimed time can revive a code or start expiring credit in the past.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.events import RedeemEvent, promo_key
from worker.alerts.checks import check_alerts
from worker.credits import ledger
from worker.credits.accounts import ensure_account, sync_key
from worker.credits.promo_codes import code_hash
from worker.db import session_scope
from worker.errors import Rejected
from worker.models import PromoCode


def redeem(event: RedeemEvent) -> bool:
    """Credit the code (True; False for a second delivery of a redemption already applied), then
    make the key's max_budget the new credited total."""
    with session_scope() as session:
        written = apply_redeem(session, event, datetime.now(UTC))
    # As for a payment: a user whose signup has not been applied gets no key here; the signup
    # makes it, at a total that already holds this credit.
    sync_key(event.user_id, provision_unsigned=False)
    check_alerts([event.user_id])
    return written


def apply_redeem(session: Session, event: RedeemEvent, now: datetime) -> bool:
    code = session.execute(
        select(PromoCode).where(PromoCode.code_hash == code_hash(event.code)).with_for_update()
    ).scalar_one_or_none()
    if code is None:
        raise Rejected("unknown code")
    key = promo_key(code.id, event.user_id)
    claimed = event.redeemed_at.astimezone(UTC).isoformat()
    earlier = ledger.entry(session, key)
    if earlier is not None:
        # The same redemption delivered again (a retry after a failed push, a redelivery) is done;
        # the user typing the code a second time is refused. (Entries written before the claim
        # was recorded in details carry it as their time.)
        if (earlier.details or {}).get("redeemed_at", earlier.occurred_at.astimezone(UTC).isoformat()) == claimed:
            return False
        raise Rejected("already redeemed by this user")
    if code.expires_at is not None and code.expires_at <= now:
        raise Rejected("expired")
    if code.max_uses is not None and code.uses >= code.max_uses:
        raise Rejected("used up")
    at = max(now, code.created_at)
    ensure_account(session, event.user_id)
    code.uses += 1
    return ledger.record(
        session, user_id=event.user_id, kind="promo", idempotency_key=key, grant_key=key,
        credit=code.amount_usd, occurred_at=at,
        expires_at=at + timedelta(days=code.credit_expires_days) if code.credit_expires_days else None,
        details={"code_id": code.id, "hint": code.hint, "redeemed_at": claimed},
    )
