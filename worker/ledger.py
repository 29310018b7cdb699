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


def record(
    session: Session,
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
) -> bool:
    """Append one entry; False (and nothing written) when its idempotency key is already there."""
    stmt = (
        insert(LedgerEntry)
        .values(
            user_id=user_id,
            kind=kind,
            idempotency_key=idempotency_key,
            grant_key=grant_key,
            credit_usd=credit,
            paid_usd=paid,
            spent_usd=spent,
            occurred_at=occurred_at,
            details=details,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(LedgerEntry.id)
    )
    return session.execute(stmt).scalar() is not None


def credited_total(session: Session, user_id: str) -> Decimal:
    """What the key's max_budget must be: every credit ever granted, less refunds."""
    total = session.execute(
        select(func.coalesce(func.sum(LedgerEntry.credit_usd), 0))
        # Usage carries no credit; leaving it out lets ledger_entries_credits_idx skip it.
        .where(LedgerEntry.user_id == user_id, LedgerEntry.kind != "usage")
    ).scalar_one()
    return Decimal(total)


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
