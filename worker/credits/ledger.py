"""The append-only ledger: write facts once by idempotency key, derive every balance from them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from worker.models import LedgerEntry
from worker.money import PLACES, PROXY_TOLERANCE, money  # noqa: F401 - the one rounding rule (worker/money.py)


def new_entry(
    *,
    user_id: str,
    kind: str,
    idempotency_key: str,
    occurred_at: datetime,
    credit: Decimal = Decimal(0),
    paid: Decimal = Decimal(0),
    spent: Decimal = Decimal(0),
    grant_key: str | None = None,
    details: dict[str, Any] | None = None,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    """One entry's columns, for record_many."""
    return {"user_id": user_id, "kind": kind, "idempotency_key": idempotency_key, "grant_key": grant_key,
            "credit_usd": credit, "paid_usd": paid, "spent_usd": spent, "occurred_at": occurred_at,
            "details": details, "expires_at": expires_at}


def record(session: Session, **fields: Any) -> bool:
    """Append one entry (new_entry's fields); False (and nothing written) when its idempotency key
    is already there."""
    return bool(record_many(session, [new_entry(**fields)]))


def record_many(session: Session, entries: list[dict[str, Any]]) -> set[str]:
    """Append many entries (new_entry's) in one round trip; returns the idempotency keys
    written, leaving out those already there. Sort them by key: concurrent batches then take
    their key locks in one order and cannot deadlock."""
    if not entries:
        return set()
    stmt = (
        insert(LedgerEntry).on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(LedgerEntry.idempotency_key)
    )
    return set(session.execute(stmt, entries).scalars().all())


def owners(session: Session, idempotency_keys: list[str]) -> dict[str, str]:
    """The user each of these entries belongs to."""
    found = session.execute(
        select(LedgerEntry.idempotency_key, LedgerEntry.user_id)
        .where(LedgerEntry.idempotency_key.in_(idempotency_keys))
    )
    return dict(found.all())


def entries(session: Session, idempotency_keys: list[str]) -> dict[str, LedgerEntry]:
    """These entries by idempotency key (those that exist), in one statement."""
    found = session.execute(select(LedgerEntry).where(LedgerEntry.idempotency_key.in_(idempotency_keys)))
    return {e.idempotency_key: e for e in found.scalars()}


def credited_totals(session: Session, user_ids: list[str]) -> dict[str, Decimal]:
    """What each key's max_budget must be, from the one definition (the view account_credits)."""
    totals = dict(session.execute(
        text("SELECT user_id, credited_usd FROM account_credits WHERE user_id = ANY(:ids)"), {"ids": list(user_ids)}
    ).all())
    return {user_id: Decimal(totals.get(user_id) or 0) for user_id in user_ids}


def spent_totals(session: Session, user_ids: list[str]) -> dict[str, Decimal]:
    """Usage debited from each account, in one statement, from the running totals (migration
    0009, audited against the ledger): one row an account, whatever its history."""
    totals = dict(session.execute(
        text("SELECT user_id, spent_usd FROM account_totals WHERE user_id = ANY(:ids)"), {"ids": list(user_ids)}
    ).all())
    return {user_id: Decimal(totals.get(user_id) or 0) for user_id in user_ids}


def credited_total(session: Session, user_id: str) -> Decimal:
    return credited_totals(session, [user_id])[user_id]


def entry(session: Session, idempotency_key: str) -> LedgerEntry | None:
    return session.execute(
        select(LedgerEntry).where(LedgerEntry.idempotency_key == idempotency_key)
    ).scalar_one_or_none()


def grant_totals(session: Session, grant_key: str) -> tuple[Decimal, Decimal]:
    """(credit, paid) left on one grant after its refunds."""
    credit, paid = session.execute(
        select(
            func.coalesce(func.sum(LedgerEntry.credit_usd), 0),
            func.coalesce(func.sum(LedgerEntry.paid_usd), 0),
        ).where(LedgerEntry.grant_key == grant_key)
    ).one()
    return Decimal(credit), Decimal(paid)


@dataclass(frozen=True)
class Balance:
    user_id: str
    key_alias: str
    key_status: str
    credited_usd: Decimal
    paid_usd: Decimal
    spent_usd: Decimal
    remaining_usd: Decimal
    savings_usd: Decimal
    budget_pushed_usd: Decimal | None
    budget_pushed_at: datetime | None
    last_spend_at: datetime | None


def balance(session: Session, user_id: str) -> Balance | None:
    row = session.execute(
        text("SELECT * FROM account_balances WHERE user_id = :u"), {"u": user_id}
    ).mappings().one_or_none()
    return Balance(**row) if row else None
