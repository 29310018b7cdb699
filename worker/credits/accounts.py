"""Accounts and their one virtual key: created once, then kept at the ledger's credited total."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from schemas.events import signup_key
from worker import proxy
from worker.credits import keys, ledger
from worker.db import session_scope
from worker.errors import Rejected
from worker.models import Account

log = logging.getLogger(__name__)
PROVISION_THREADS = 8  # /key/generate requests in flight at once, per sync_keys call


def ensure_account(session: Session, user_id: str, email: str | None = None) -> bool:
    """Create the account with a fresh key unless it exists; safe when two workers race. True if
    this call created it."""
    key = keys.new_key()
    created = session.execute(
        insert(Account)
        .values(
            user_id=user_id,
            email=email,
            key_alias=keys.alias_for(user_id),
            key_hash=keys.key_hash(key),
            key_encrypted=keys.encrypt(key),
            key_status="pending",
        )
        # No conflict target: two creators of one new account can each pass the user_id check
        # and then meet on key_alias (unique too, and derived from the user id), which a
        # user_id target does not cover and PostgreSQL raises as an IntegrityError.
        .on_conflict_do_nothing()
        .returning(Account.user_id)
    ).scalar() is not None
    if email:
        session.execute(
            update(Account).where(Account.user_id == user_id, Account.email.is_(None)).values(email=email)
        )
    return created


def sync_key(user_id: str, provision_unsigned: bool = True) -> Decimal | None:
    """Make the proxy hold the ledger's credited total for this user's key; returns what it holds
    now (None without an active key), or raises why the push failed."""
    held, failed = sync_keys([user_id], provision_unsigned)
    if user_id in failed:
        raise failed[user_id]
    return held.get(user_id)


def sync_keys(user_ids: Iterable[str], provision_unsigned: bool = True
              ) -> tuple[dict[str, Decimal | None], dict[str, Exception]]:
    """sync_key for many accounts at once: pushes that change something go out as one request,
    and keys still to be made are made PROVISION_THREADS at a time.

    Each account row stays locked from reading its total until the push is recorded, so two
    workers can never push one key's totals out of order; rows are locked in user id order, so
    two batches cannot deadlock. With provision_unsigned=False (payments), an account whose
    signup has not been applied yet gets no key now: its signup makes it, at a total that already
    holds the payment, so the key is written once (reconcile makes it if no signup ever comes).
    Returns (what each key now holds, why each failed push failed): a failed push is recorded
    as the account's push_error and left for the retry.
    """
    ids = sorted(set(user_ids))
    held: dict[str, Decimal | None] = {}
    failed: dict[str, Exception] = {}
    with session_scope() as session:
        accounts = session.execute(
            select(Account).where(Account.user_id.in_(ids)).order_by(Account.user_id).with_for_update()
        ).scalars().all()
        # A statement of its own, after the locks are held: a statement that waited for a lock
        # still reads with the snapshot it started with, so a total summed in the locking
        # statement can miss a refund committed while it waited, and push a stale, larger budget.
        totals = ledger.credited_totals(session, [a.user_id for a in accounts])
        pending = [a for a in accounts if a.key_status == "pending"]
        if pending and not provision_unsigned:
            signed = ledger.owners(session, [signup_key(a.user_id) for a in pending])
            for account in pending:
                if signup_key(account.user_id) not in signed:
                    held[account.user_id] = None
            pending = [a for a in pending if a.user_id not in held]
        failed.update(_provision_all(pending, totals))
        changed = {a.key_hash: a for a in accounts
                   if a.key_status == "active" and a not in pending and a.budget_pushed_usd != totals[a.user_id]}
        held.update({a.user_id: None for a in accounts if a.key_status == "failed"})
        failed.update(_push(changed, totals))
        now = datetime.now(UTC)
        for account in accounts:
            if account.user_id in failed:
                account.push_error = str(failed[account.user_id])[:500]
            elif account.user_id not in held:
                held[account.user_id] = account.budget_pushed_usd = totals[account.user_id]
                account.budget_pushed_at, account.push_error = now, None
    return held, failed


def _provision_all(accounts: list[Account], totals: dict[str, Decimal]) -> dict[str, Exception]:
    """Make these keys, several requests at once (the proxy serves them in parallel); the rows
    are changed here, in the session's thread. Failures by user id."""
    jobs = [(keys.decrypt(a.key_encrypted), a.key_alias, a.user_id, a.key_hash, totals[a.user_id]) for a in accounts]
    if len(jobs) > 1:
        proxy.client()  # made once, here, not by several threads at once
        with ThreadPoolExecutor(min(PROVISION_THREADS, len(jobs))) as pool:
            outcomes = list(pool.map(lambda job: _provision(*job), jobs))
    else:
        outcomes = [_provision(*job) for job in jobs]
    failed = {}
    for account, outcome in zip(accounts, outcomes, strict=True):
        if outcome is None:
            account.key_status = "active"
            log.info("key provisioned", extra={"user_id": account.user_id, "max_budget": str(totals[account.user_id])})
        else:
            failed[account.user_id] = outcome
    return failed


def _push(changed: dict[str, Account], totals: dict[str, Decimal]) -> dict[str, Exception]:
    """The new budgets of these accounts (by key hash): failures by user id."""
    if not changed:
        return {}
    if len(changed) == 1:
        ((key_hash, account),) = changed.items()
        try:
            proxy.set_max_budget(key_hash, totals[account.user_id])
        except proxy.ProxyError as exc:
            return {account.user_id: exc}
        return {}
    try:
        refused = proxy.set_max_budgets({h: totals[a.user_id] for h, a in changed.items()})
    except proxy.ProxyError as exc:
        return {a.user_id: exc for a in changed.values()}
    return {changed[h].user_id: exc for h, exc in refused.items()}


def _provision(key: str, alias: str, user_id: str, key_hash: str, total: Decimal) -> Exception | None:
    """Make one key at `total`; returns why it could not be made, or None."""
    try:
        try:
            proxy.generate_key(key, alias, user_id, total)
        except proxy.PermanentProxyError as exc:
            if "already exists" not in str(exc):
                raise
            # A retry after we generated it but died before committing: check it is ours.
            try:
                info = proxy.key_info(key_hash).info
            except proxy.PermanentProxyError:
                raise Rejected(f"key alias {alias!r} is taken on the proxy by another key") from None
            if info.key_alias != alias:
                raise
            if info.max_budget != total:
                proxy.set_max_budget(key_hash, total)
    except (proxy.ProxyError, Rejected) as exc:
        return exc
    return None
