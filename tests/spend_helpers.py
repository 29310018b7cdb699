"""What the spend-sync tests share: accounts with known keys, and what the ledger and cursor hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select

from tests.standin.proxy import token
from worker.credits.ledger import money
from worker.db import session_scope
from worker.models import Account, LedgerEntry, SpendLog, SpendSyncRun
from worker.spend import runs as spend_runs

BASE = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
SETTLE = timedelta(seconds=120)
ALICE, BOB, STRANGER = "sk-alice-0001", "sk-bob-0002", "sk-stranger-0003"


def account(user_id: str, key: str, created: datetime = BASE) -> None:
    with session_scope() as session:
        session.add(Account(user_id=user_id, key_alias=f"test-{user_id}", key_hash=token(key),
                            key_encrypted="unused", key_status="active", created_at=created))


def usage() -> tuple[int, Decimal]:
    with session_scope() as session:
        count, total = session.execute(
            select(func.count(), func.coalesce(func.sum(LedgerEntry.spent_usd), 0)).where(LedgerEntry.kind == "usage")
        ).one()
    return count, Decimal(total)


def stored() -> int:
    with session_scope() as session:
        return session.execute(select(func.count()).select_from(SpendLog)).scalar_one()


def position() -> datetime | None:
    with session_scope() as session:
        found = spend_runs.cursor(session)
    return found.position if found else None


def last_run() -> SpendSyncRun:
    with session_scope() as session:
        return session.execute(select(SpendSyncRun).order_by(SpendSyncRun.id.desc()).limit(1)).scalar_one()


def exact(value: float) -> Decimal:
    """What the proxy's float becomes in the ledger: its shortest repr, at numeric(20, 10)."""
    return money(Decimal(str(value)))
