"""Signups: the account (with its key still to be made on the proxy) and its starting grant.

Signups that queue up are applied a batch at a time (worker.delivery.batching), as payments are:
one transaction for the accounts and grants, then their keys made several at a time
(accounts.sync_keys), each at the credited total the ledger holds by then, so a payment applied
before its signup is in the key's first max_budget and needs no second write.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from schemas.events import SignupEvent
from worker import signing
from worker.credits import ledger
from worker.credits.accounts import ensure_account, sync_keys
from worker.db import session_scope
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


def apply_signup_batch(raw_events: Sequence[dict[str, Any]]) -> list[Exception | None]:
    """Apply each signup, then make (or bring up to date) each user's key. Returns, per event,
    None when it is done or the exception that stopped it (bad input, or a fault to retry)."""
    outcomes, parsed = signing.parse_signed(raw_events, SignupEvent, signing.check_signup)
    if not parsed:
        return outcomes
    try:
        with session_scope() as session:
            # In user id order: two batches then take their row locks in one order.
            for event in sorted(parsed.values(), key=lambda e: e.user_id):
                apply_signup(session, event)
    except Exception as exc:  # the whole transaction rolled back: every event retries or fails
        return [outcome if i not in parsed else exc for i, outcome in enumerate(outcomes)]
    users = {event.user_id for event in parsed.values()}
    try:
        _, failed = sync_keys(users)
    except Exception as exc:
        failed = dict.fromkeys(users, exc)
    for i, event in parsed.items():
        outcomes[i] = failed.get(event.user_id)
    return outcomes
