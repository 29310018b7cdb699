"""Accounts and their one virtual key: created once, then kept at the ledger's credited total."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from worker import keys, ledger, proxy
from worker.db import session_scope
from worker.errors import Rejected
from worker.models import Account

log = logging.getLogger(__name__)


def ensure_account(session: Session, user_id: str, email: str | None = None) -> None:
    """Create the account with a fresh key unless it exists; safe when two workers race."""
    key = keys.new_key()
    session.execute(
        insert(Account)
        .values(
            user_id=user_id,
            email=email,
            key_alias=keys.alias_for(user_id),
            key_hash=keys.key_hash(key),
            key_encrypted=keys.encrypt(key),
            key_status="pending",
        )
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    if email:
        session.execute(
            update(Account).where(Account.user_id == user_id, Account.email.is_(None)).values(email=email)
        )


def sync_key(user_id: str) -> Decimal | None:
    """Make the proxy hold the ledger's credited total for this user's key, as an absolute value.

    The account row stays locked from reading the total until the push is recorded, so two
    workers can never push totals out of order. Returns what the proxy now holds.
    """
    try:
        with session_scope() as session:
            account = session.execute(
                select(Account).where(Account.user_id == user_id).with_for_update()
            ).scalar_one_or_none()
            if account is None:
                return None
            # A statement of its own, after the lock is held: a statement that waited for the lock
            # still reads with the snapshot it started with, so a total summed in the locking
            # statement can miss a refund committed while it waited, and push a stale, larger budget.
            total = ledger.credited_total(session, user_id)
            if account.key_status == "pending":
                _provision(account, total)
            elif account.key_status == "active" and account.budget_pushed_usd != total:
                proxy.set_max_budget(account.key_hash, total)
            elif account.key_status == "failed":
                return None
            account.budget_pushed_usd = total
            account.budget_pushed_at = datetime.now(UTC)
            account.push_error = None
            return total
    except proxy.ProxyError as exc:
        _note_push_error(user_id, str(exc))
        raise


def _provision(account: Account, total: Decimal) -> None:
    key = keys.decrypt(account.key_encrypted)
    try:
        proxy.generate_key(key, account.key_alias, account.user_id, total)
    except proxy.PermanentProxyError as exc:
        if "already exists" not in str(exc):
            raise
        # A retry after we generated it but died before committing: check it is ours.
        try:
            info = proxy.key_info(account.key_hash).info
        except proxy.PermanentProxyError:
            raise Rejected(f"key alias {account.key_alias!r} is taken on the proxy by another key") from None
        if info.key_alias != account.key_alias:
            raise
        if info.max_budget != total:
            proxy.set_max_budget(account.key_hash, total)
    account.key_status = "active"
    log.info("key provisioned", extra={"user_id": account.user_id, "max_budget": str(total)})


def _note_push_error(user_id: str, message: str) -> None:
    """Best effort: shows the push as pending on the dashboard; the retry will clear it."""
    try:
        with session_scope() as session:
            session.execute(update(Account).where(Account.user_id == user_id).values(push_error=message))
    except Exception:  # noqa: BLE001 - the original proxy error is what matters
        log.warning("could not record push error", exc_info=True)


def get_account(session: Session, user_id: str) -> Account | None:
    return session.get(Account, user_id)
