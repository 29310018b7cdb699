"""Manual adjustments: an operator's correction of a user's credit, either sign, once per reference.

The CLI (`litellm-credits adjust`) and the task `events.adjustment` both go through `adjust`, so
an adjustment sent both ways, or twice, writes one entry.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.events import AdjustmentEvent
from worker.alerts.checks import check_alerts
from worker.credits import ledger
from worker.credits.accounts import sync_key
from worker.db import session_scope
from worker.errors import Rejected
from worker.models import Account


def adjust(event: AdjustmentEvent, force: bool = False) -> bool:
    """Write the adjustment (True; False when its reference is already in), then make the key's
    max_budget the new credited total and check the balance alerts (a negative one can fire)."""
    with session_scope() as session:
        written = apply_adjustment(session, event, force)
    sync_key(event.user_id)
    check_alerts([event.user_id])
    return written


def apply_adjustment(session: Session, event: AdjustmentEvent, force: bool = False) -> bool:
    # The account row locked first, as refunds do: two adjustments (or an adjustment and a
    # refund) of one account cannot both pass the check against what is spent.
    account = session.execute(
        select(Account).where(Account.user_id == event.user_id).with_for_update()
    ).scalar_one_or_none()
    if account is None:
        raise Rejected(f"no account for user {event.user_id!r}")
    amount = ledger.money(event.amount)
    existing = ledger.entry(session, event.idempotency_key)
    if existing is not None:
        if existing.user_id != event.user_id or existing.credit_usd != amount:
            raise Rejected(f"adjustment reference {event.reference!r} was already used for another adjustment "
                           f"({existing.credit_usd:f} USD to {existing.user_id!r})")
        return False
    if amount < 0 and not force:
        balance = ledger.balance(session, event.user_id)
        assert balance is not None  # the account exists, so its row in the view does
        if balance.credited_usd + amount < balance.spent_usd:
            raise Rejected(
                f"adjustment of {amount:f} USD would lower the credited total to "
                f"{balance.credited_usd + amount:f} USD, below the {balance.spent_usd:f} USD already spent "
                "(use --force to apply it anyway)"
            )
    key = event.idempotency_key
    return ledger.record(
        session, user_id=event.user_id, kind="adjustment", idempotency_key=key,
        # A positive adjustment is free credit, a grant of its own for savings_usd; a negative one
        # takes credit back and belongs to no grant.
        grant_key=key if amount > 0 else None, credit=amount, occurred_at=event.occurred_at,
        details={"reason": event.reason, "actor": event.actor, "reference": event.reference, "forced": force},
    )
