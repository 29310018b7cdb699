"""A user redeems a promo code: its amount credited once per (code, user), within its expiry and uses.

Every redemption of one code locks the code's row, in the transaction that writes the promo
entry and counts the use: many users redeeming one code at the same instant are served one at a
time, so `max_uses` is never passed, and a use is counted exactly when its credit is written.
"""

from __future__ import annotations

from datetime import timedelta

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
        written = apply_redeem(session, event)
    sync_key(event.user_id)
    check_alerts([event.user_id])
    return written


def apply_redeem(session: Session, event: RedeemEvent) -> bool:
    code = session.execute(
        select(PromoCode).where(PromoCode.code_hash == code_hash(event.code)).with_for_update()
    ).scalar_one_or_none()
    if code is None:
        raise Rejected("unknown code")
    key = promo_key(code.id, event.user_id)
    earlier = ledger.entry(session, key)
    if earlier is not None:
        # The same redemption delivered again (a retry after a failed push, a redelivery) is done;
        # the user typing the code a second time is refused.
        if earlier.occurred_at == event.redeemed_at:
            return False
        raise Rejected("already redeemed by this user")
    if code.expires_at is not None and code.expires_at <= event.redeemed_at:
        raise Rejected("expired")
    if code.max_uses is not None and code.uses >= code.max_uses:
        raise Rejected("used up")
    # A code redeemed before the user's signup makes the account, as a payment does.
    ensure_account(session, event.user_id)
    code.uses += 1
    return ledger.record(
        session, user_id=event.user_id, kind="promo", idempotency_key=key, grant_key=key,
        credit=code.amount_usd, occurred_at=event.redeemed_at,
        expires_at=event.redeemed_at + timedelta(days=code.credit_expires_days) if code.credit_expires_days else None,
        details={"code_id": code.id, "hint": code.hint},
    )
