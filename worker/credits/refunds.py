"""Refunds: the refunded share of one payment's credit and amount paid goes back, once per refund."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.events import RefundEvent
from worker.credits import ledger
from worker.credits.payments import major_units
from worker.errors import NotYet, Rejected
from worker.models import Account


def refund_user(session: Session, event: RefundEvent) -> str:
    """Whose refund this is: the event's user, else its payment's (a Paystack refund names none)."""
    if event.user_id is not None:
        return event.user_id
    payment = ledger.entry(session, event.payment_key)
    if payment is None:
        raise NotYet(_unknown(event))
    return payment.user_id


def _unknown(event: RefundEvent) -> str:
    # Its payment may still be on the way (sent at the same instant, or held back in a queue):
    # retried with backoff, dead-lettered with this reason after the last retry.
    user = f" for user {event.user_id!r}" if event.user_id is not None else ""
    return f"refund of unknown payment {event.payment_reference!r}{user}"


def apply_refund(session: Session, event: RefundEvent) -> bool:
    """Reverse the refunded share of the payment's credit and amount paid, once per refund."""
    event = event.model_copy(update={"user_id": refund_user(session, event)})
    # Serialise refunds of one account before anything is read: a duplicate delivered
    # concurrently must then see the first copy's entry (a no-op), not find nothing left to
    # refund and be dead-lettered; and two different refunds cannot both pass the check below.
    session.execute(select(Account).where(Account.user_id == event.user_id).with_for_update())
    if _already_applied(session, event):
        return False
    payment = ledger.entry(session, event.payment_key)
    unknown = _unknown(event)
    if payment is None:
        raise NotYet(unknown)
    if payment.user_id != event.user_id:
        raise Rejected(unknown)
    currency = (payment.details or {}).get("currency")
    if event.currency != currency:
        raise Rejected(f"refund currency {event.currency} differs from the payment's {currency}")
    amount = major_units(event.amount_minor, event.currency)
    credit_left, paid_left = ledger.grant_totals(session, event.payment_key)
    if amount > paid_left:
        raise Rejected(
            f"refund of {amount:.2f} {event.currency} exceeds the {paid_left:.2f} left to refund "
            f"on payment {event.payment_reference!r}"
        )
    if amount == paid_left:
        # The last refund takes exactly what is left, so rounded partial shares leave no dust.
        credit = credit_left
    else:
        credit = ledger.money(amount / payment.paid_usd * payment.credit_usd)
    written = ledger.record(
        session, user_id=event.user_id, kind="refund", idempotency_key=event.idempotency_key,
        grant_key=event.payment_key, credit=-credit, paid=-amount, occurred_at=event.refunded_at,
        details={"provider": event.provider, "refund_reference": event.refund_reference,
                 "payment_reference": event.payment_reference},
    )
    # Not written: the same reference was refunded concurrently under another account's lock
    # (so not serialised with this one) and has committed; it is this refund or a conflict.
    return written or not _already_applied(session, event)


def _already_applied(session: Session, event: RefundEvent) -> bool:
    """True when this very refund is in the ledger (a redelivery: nothing to do). Rejected when its
    reference was used for another refund: taking that as a duplicate would drop this one silently."""
    previous = ledger.entry(session, event.idempotency_key)
    if previous is None:
        return False
    was = (previous.details or {}).get("payment_reference")
    if previous.grant_key != event.payment_key or previous.user_id != event.user_id:
        raise Rejected(f"refund reference {event.refund_reference!r} was already used for payment {was!r}"
                       f"{'' if previous.user_id == event.user_id else ' of another user'}")
    if -previous.paid_usd != major_units(event.amount_minor, event.currency):
        raise Rejected(f"refund reference {event.refund_reference!r} was already used for payment {was!r} "
                       f"with another amount ({-previous.paid_usd:.2f}, not "
                       f"{major_units(event.amount_minor, event.currency):.2f} {event.currency})")
    return True
