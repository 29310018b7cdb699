"""Key budgets against the ledger: a page of listed keys screened in two statements, the few that
differ confirmed at rest, and with fix=True repaired by bulk pushes.

The listing is read a moment before the ledger, so a payment pushed in between can make a key
look drifted. A key that differs is therefore read again (/key/info) with its account row locked
(shared when only reading), as an in-flight sync_key holds it for update: the ledger and the
proxy are then compared at rest, and only what still differs is drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pydantic import ValidationError
from sqlalchemy import select

from schemas.proxy import KeyInfo, ListedKey
from worker import proxy
from worker.credits import ledger
from worker.credits.accounts import sync_keys
from worker.credits.reconcile_report import Drift, Report, differs
from worker.db import session_scope
from worker.models import Account

# A proxy that fails this many keys in a row is down: stop instead of timing out on each.
MAX_CONSECUTIVE_FAILURES = 5


class ProxyDown(Exception):
    """The proxy failed several keys in a row: the run stops (each key was recorded)."""


@dataclass(frozen=True)
class Compared:
    """One listed key, matched to its account, beside the ledger's figures."""

    user_id: str
    key_hash: str
    created_at: datetime
    proxy_budget: Decimal | None
    proxy_spend: Decimal
    credited: Decimal
    spent: Decimal
    budget_duration: str | None = None
    updated_at: datetime | None = None


def compare_page(keys: list[ListedKey]) -> list[Compared]:
    """The page's keys that belong to an active account, with its credited and spent totals."""
    by_hash = {key.token: key for key in keys}
    with session_scope() as session:
        accounts = session.execute(
            select(Account.user_id, Account.key_hash, Account.created_at)
            .where(Account.key_hash.in_(list(by_hash)), Account.key_status == "active")
        ).all()
        ids = [a.user_id for a in accounts]
        credited, spent = ledger.credited_totals(session, ids), ledger.spent_totals(session, ids)
    return [Compared(a.user_id, a.key_hash, a.created_at, by_hash[a.key_hash].max_budget,
                     by_hash[a.key_hash].spend, credited[a.user_id], spent[a.user_id],
                     by_hash[a.key_hash].budget_duration, by_hash[a.key_hash].updated_at) for a in accounts]


def confirm(user_ids: list[str], fix: bool, report: Report) -> tuple[dict[str, KeyInfo], list[str]]:
    """Read each account's key again, with its row locked; what still differs is drift. Returns
    the keys read (for the spend check) and, with fix=True, the accounts to push again (`push`)."""
    read: dict[str, KeyInfo] = {}
    to_push: list[str] = []
    with session_scope() as session:
        accounts = session.execute(
            select(Account).where(Account.user_id.in_(user_ids), Account.key_status == "active")
            .order_by(Account.user_id).with_for_update(read=not fix)
        ).scalars().all()
        # A statement of its own, after the locks: see accounts.sync_keys.
        totals = ledger.credited_totals(session, [a.user_id for a in accounts])
        streak = 0
        for account in accounts:
            try:
                info = proxy.key_info(account.key_hash).info
                streak = 0
            except (proxy.ProxyError, ValidationError) as exc:
                report.key_error(account.user_id, exc, "budget")
                streak = streak + 1 if isinstance(exc, proxy.TransientProxyError) else 0
                if streak >= MAX_CONSECUTIVE_FAILURES:
                    raise ProxyDown(f"stopped after {streak} proxy failures in a row") from exc
                continue
            if info.status == "deleted":
                report.key_error(account.user_id, "the key is deleted on the proxy; it needs a new key, "
                                 "not a budget", "budget")
                continue
            read[account.user_id] = info
            if differs(info.max_budget, totals[account.user_id]):
                report.drifted.append(Drift(account.user_id, info.max_budget, totals[account.user_id]))
                if fix:
                    # Forget what we believe we pushed, so sync_keys pushes again (under its own
                    # locks, after this commit) whatever the ledger holds by then.
                    account.budget_pushed_usd = None
                    to_push.append(account.user_id)
    return read, to_push


def push(user_ids: list[str], report: Report) -> None:
    """The ledger's totals onto these keys, in one /key/bulk_update per 100 (accounts.sync_keys)."""
    if not user_ids:
        return
    _, failed = sync_keys(user_ids)
    for user_id, exc in failed.items():
        report.key_error(user_id, exc, "budget")
    report.fixed += len(user_ids) - len(failed)
