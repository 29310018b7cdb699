"""Payments into the ledger: plan matching, currency and minor units, one credit per reference."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from schemas.events import PaymentEvent
from worker.credits import ledger
from worker.credits.accounts import ensure_account
from worker.errors import Rejected
from worker.models import Account
from worker.settings import get_settings

# ISO 4217 minor-unit exponents that are not 2.
_EXPONENTS = {"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
              "PYG": 0, "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
              "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3}


def major_units(amount_minor: int, currency: str) -> Decimal:
    return Decimal(amount_minor).scaleb(-_EXPONENTS.get(currency, 2))


def credit_for(event: PaymentEvent) -> tuple[Decimal, Decimal]:
    """(amount paid, credit bought) in USD, or Rejected if it matches no plan."""
    s = get_settings()
    amount = major_units(event.amount_minor, event.currency)
    plans = ", ".join(f"{p:.2f}" for p in s.payment_plans)
    if event.currency != s.plan_currency:
        raise Rejected(f"{amount:.2f} {event.currency} is not in the plan currency {s.plan_currency}")
    if amount not in s.payment_plans:
        raise Rejected(f"{amount:.2f} {event.currency} matches no plan: {plans}")
    return amount, amount * s.credit_multiplier


def _conflict(event: PaymentEvent, user_id: str, paid: Decimal, currency: str | None) -> Rejected | None:
    """Why this event is not a duplicate of the entry its reference already has, or None."""
    if user_id != event.user_id:
        return Rejected(f"payment reference {event.reference!r} was already credited to another user")
    amount = major_units(event.amount_minor, event.currency)
    if (paid, currency) != (amount, event.currency):
        return Rejected(f"payment reference {event.reference!r} was already credited for {paid:.2f} {currency}; "
                        f"this event says {amount:.2f} {event.currency}")
    return None


def apply_payments(session: Session, events: Sequence[PaymentEvent]) -> list[Rejected | None]:
    """One credit of price x multiplier per (provider, reference), for a batch of payments in a
    few statements; returns, per event, why it was refused (nothing written for it) or None."""
    refused: list[Rejected | None] = [None] * len(events)
    entries = {}
    for i, event in enumerate(events):
        try:
            amount, credit = credit_for(event)
        except Rejected as exc:
            refused[i] = exc
            continue
        key = event.idempotency_key
        entries.setdefault(key, ledger.new_entry(
            user_id=event.user_id, kind="payment", idempotency_key=key, grant_key=key, credit=credit,
            paid=amount, occurred_at=event.paid_at,
            details={"provider": event.provider, "reference": event.reference, "plan": event.plan,
                     "currency": event.currency, "amount_minor": event.amount_minor},
        ))
    if not entries:
        return refused
    users = sorted({e["user_id"] for e in entries.values()})
    known = set(session.execute(select(Account.user_id).where(Account.user_id.in_(users))).scalars())
    # A payment before its signup creates the account (the signup fills in the email).
    created = {user_id for user_id in users if user_id not in known and ensure_account(session, user_id)}
    written = ledger.record_many(session, [entries[key] for key in sorted(entries)])
    # Checked after the insert, not before: two events racing on one reference both pass a check
    # made first, and the loser's insert would then be silently skipped as a duplicate. What
    # stands is the entry written first; only an event that says the same is its duplicate.
    earlier = ledger.entries(session, sorted(set(entries) - written))
    standing = {key: (entries[key]["user_id"], entries[key]["paid_usd"], entries[key]["details"]["currency"])
                for key in written}
    standing |= {key: (e.user_id, e.paid_usd, (e.details or {}).get("currency")) for key, e in earlier.items()}
    for i, event in enumerate(events):
        if refused[i] is None:
            refused[i] = _conflict(event, *standing[event.idempotency_key])
    # An account made just now for payments that were all refused is taken back, as a rollback
    # would: nobody else can see it before this transaction commits.
    credited = {event.user_id for event, no in zip(events, refused, strict=True) if no is None}
    if created - credited:
        session.execute(delete(Account).where(Account.user_id.in_(sorted(created - credited))))
    return refused
