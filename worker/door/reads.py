"""The dashboard's reads: the balance, daily usage over a date range, and the ledger a page at a time.

Each is bounded and served by an index (the queries are docs/dashboard.md's): the balance by
account_totals' primary key, usage by spend_daily's (user_id, day, ...) key over at most
MAX_USAGE_DAYS, the history by ledger_entries_history_idx (user_id, occurred_at, id), newest
first, MAX_PAGE entries at most, continued before the last entry's id.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy import text
from sqlalchemy.orm import Session

from worker.credits import ledger
from worker.db import session_scope
from worker.door.auth import bearer
from worker.door.body import Refused
from worker.models import Account

router = APIRouter(dependencies=[Depends(bearer)])
MAX_USAGE_DAYS = 366
MAX_PAGE = 200
USAGE = text("SELECT day, model, requests, failed_requests, prompt_tokens, completion_tokens, spend_usd "
             "FROM daily_usage WHERE user_id = :u AND day BETWEEN :start AND :end ORDER BY day, model")
HISTORY = ("SELECT id, kind, credit_usd, paid_usd, spent_usd, occurred_at, details FROM ledger_entries "
           "WHERE user_id = :u {before} ORDER BY occurred_at DESC, id DESC LIMIT :limit")
BEFORE = "AND (occurred_at, id) < (SELECT occurred_at, id FROM ledger_entries WHERE id = :before AND user_id = :u)"


def plain(value: Any) -> Any:
    """Money as a decimal string (never a JSON float), times and days as ISO 8601."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _known(session: Session, user_id: str) -> None:
    if session.get(Account, user_id) is None:
        raise Refused(404, f"no account {user_id!r}", "unknown_user")


@router.get("/v1/accounts/{user_id}")
def account(user_id: str) -> dict[str, Any]:
    with session_scope() as session:
        balance = ledger.balance(session, user_id)
    if balance is None:
        raise Refused(404, f"no account {user_id!r}", "unknown_user")
    return {k: plain(v) for k, v in vars(balance).items()}


@router.get("/v1/accounts/{user_id}/usage")
def usage(user_id: str, start: date | None = None, end: date | None = None) -> dict[str, Any]:
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=29)
    if start > end or (end - start).days >= MAX_USAGE_DAYS:
        raise Refused(422, f"start must be on or before end, and the range at most {MAX_USAGE_DAYS} days",
                      "bad_range")
    with session_scope() as session:
        _known(session, user_id)
        rows = session.execute(USAGE, {"u": user_id, "start": start, "end": end}).mappings().all()
    return {"user_id": user_id, "start": start.isoformat(), "end": end.isoformat(),
            "days": [{k: plain(v) for k, v in row.items()} for row in rows]}


@router.get("/v1/accounts/{user_id}/ledger")
def history(user_id: str, limit: int = Query(50, ge=1, le=MAX_PAGE),
            before: int | None = Query(None, ge=1)) -> dict[str, Any]:
    sql = text(HISTORY.format(before=BEFORE if before is not None else ""))
    with session_scope() as session:
        _known(session, user_id)
        rows = session.execute(sql, {"u": user_id, "limit": limit, "before": before}).mappings().all()
    entries = [{k: plain(v) for k, v in row.items()} for row in rows]
    # The cursor of the next page: the last entry's id, while a full page came back.
    return {"user_id": user_id, "entries": entries,
            "next_before": entries[-1]["id"] if len(entries) == limit else None}
