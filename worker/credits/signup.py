"""A signup: the account (with its key still to be made on the proxy) and its starting grant."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from schemas.events import SignupEvent
from worker.credits import ledger
from worker.credits.accounts import ensure_account
from worker.settings import get_settings


def apply_signup(session: Session, event: SignupEvent) -> bool:
    """Once per user: a replay, or a signup after the user's first payment made the account,
    writes no second grant. True when the grant was written now."""
    ensure_account(session, event.user_id, event.email)
    key = event.idempotency_key
    days = get_settings().signup_credit_expires_days
    return ledger.record(
        session, user_id=event.user_id, kind="grant", idempotency_key=key, grant_key=key,
        credit=get_settings().signup_credit_usd, occurred_at=event.occurred_at,
        expires_at=event.occurred_at + timedelta(days=days) if days else None,
    )
