"""Compare the keys on the proxy with the ledger, and with fix=True make the proxy agree.

The ledger is the truth: a key's max_budget must equal the account's credited total, and its
spend must not be below the ledger's usage (or the key could spend credit already used). A pass
reads only the keys written since the last one (worker.credits.key_changes), and every key at
most every RECONCILE_FULL_S: an idle proxy answers one /key/list page, whatever its keys. Drift
comes from lost pushes, hand edits on the proxy, or the proxy writing a stale cached key back
(BerriAI/litellm#25553). Keys are read in bulk (worker.credits.key_sources), compared a page at a
time (budget_check, spend_check); accounts whose key the listing did not show (deleted on the
proxy, made while the listing was paged, never provisioned) are then checked one by one. A key
that cannot be checked is recorded and the run goes on; only a proxy that is down stops it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
from sqlalchemy import or_, select, true

from worker import proxy
from worker.credits import audit, budget_check, key_changes, key_sources, ledger
from worker.credits.accounts import sync_key
from worker.credits.key_sources import BadKey, PageFailed
from worker.credits.reconcile_report import Drift, Report, differs, log_report
from worker.credits.spend_check import SpendSeen, check_spend
from worker.db import Lock, exclusive, session_scope
from worker.errors import Rejected
from worker.models import Account
from worker.settings import get_settings

__all__ = ["Drift", "Report", "log_report", "reconcile", "reconcile_alone"]
log = logging.getLogger(__name__)
ACCOUNTS_BATCH = 5000
CONFIRM_CHUNK = 50  # accounts whose rows one confirmation holds locked while it reads their keys


def reconcile_alone(fix: bool, full: bool | None = None) -> Report | None:
    """reconcile() under the reconcile lock, as the beat and the CLI run it; None (nothing done)
    while another run holds the lock. full=True reads every key now (an operator's check)."""
    with exclusive(Lock.RECONCILE) as mine:
        if not mine:
            log.info("reconcile already running elsewhere; skipped")
            return None
        report = reconcile(fix=fix, full=full)
        # Under the same lock: one slice at a time moves the audit cursor.
        report.ledger_audit = audit.audit_slice(get_settings().audit_entries_per_reconcile)
        return report


def reconcile(fix: bool = False, page_size: int = proxy.KEY_LIST_MAX, full: bool | None = None) -> Report:
    """A pass over the keys changed since the last one (with full=True, or when RECONCILE_FULL_S
    has passed since the last full pass, over every key with our alias prefix and then the
    accounts not seen in it), then over the accounts whose last push is not confirmed."""
    started = datetime.now(UTC)
    with session_scope() as session:
        state = key_changes.load(session)
    full = state.full_due(started) if full is None else full
    report = Report(full=full)
    seen: set[str] = set()
    pushes: list[str] = []  # drift confirmed, pushed a bulk request at a time
    newest: datetime | None = None
    try:
        # A full pass lists keys in alias order, so the newest stamp it meets can belong to a key
        # written after an earlier page was read: its watermark is the newest write before it starts.
        before = key_sources.newest_write() if full else None
        for page in _pages(report, state, page_size):
            if isinstance(page, PageFailed):
                report.errors.append(f"key listing page {page.number} could not be read ({page.reason}); "
                                     "its keys are checked one by one")
                continue
            for bad in (k for k in page if isinstance(k, BadKey)):
                report.key_error(bad.key_alias or bad.token or "?", bad.reason, "budget")
            good = [k for k in page if not isinstance(k, BadKey)]
            stamps = [k.updated_at for k in good if k.updated_at is not None]
            if stamps:
                newest = max(stamps + ([newest] if newest else []))
            seen.update(k.token for k in page if k.token)
            _compare(good, fix, report, pushes)
        _unseen(seen, fix, report, pushes, every_account=report.full)
    except (proxy.ProxyError, psycopg.Error, budget_check.ProxyDown) as exc:
        report.run_error(f"{exc}; the keys after this point were not compared")
    finally:
        budget_check.push(pushes, report)
    if not report.stopped:
        with session_scope() as session:
            key_changes.save(session, before or newest, started if report.full else None, started)
    return report


def _pages(report: Report, state: key_changes.State, page_size: int) -> Iterator[key_sources.Page | PageFailed]:
    if not report.full:
        for page in key_sources.changed_keys(state.since, page_size):
            if not isinstance(page, PageFailed):
                yield page
                continue
            # A page of changed keys that cannot be read (the real proxy fails a page over one
            # key it cannot serialise): which keys it held is unknown, so every key is read.
            log.warning("the changed keys could not be listed (%s); comparing every key instead", page.reason)
            report.full = True
            break
        else:
            return
    yield from key_sources.listed_keys(page_size)


def _confirm(user_ids: list[str], fix: bool, report: Report, pushes: list[str]) -> dict:
    read, to_push = budget_check.confirm(user_ids, fix, report)
    pushes.extend(to_push)
    if len(pushes) >= proxy.BULK_UPDATE_CHUNK:
        budget_check.push(pushes[:], report)
        pushes.clear()
    return read


def _compare(page: list, fix: bool, report: Report, pushes: list[str]) -> None:
    compared = budget_check.compare_page(page)
    report.checked += len(compared)
    drifted = [c.user_id for c in compared if differs(c.proxy_budget, c.credited)]
    if drifted:
        _confirm(drifted, fix, report, pushes)
    check_spend([SpendSeen(c.user_id, c.key_hash, c.created_at, c.proxy_spend, c.spent, c.budget_duration,
                           c.updated_at) for c in compared], fix, report)


def _unseen(seen: set[str], fix: bool, report: Report, pushes: list[str], every_account: bool) -> None:
    """Accounts whose key the listing did not show: after a full pass every active account, after
    an incremental one only those whose last push failed or is not recorded (and keys never made)."""
    unconfirmed = or_(Account.key_status == "pending", Account.push_error.is_not(None),
                      Account.budget_pushed_usd.is_(None))
    after = ""
    while True:
        with session_scope() as session:
            batch = session.execute(
                select(Account.user_id, Account.key_hash, Account.key_status, Account.created_at)
                .where(Account.user_id > after, Account.key_status.in_(("active", "pending")),
                       true() if every_account else unconfirmed)
                .order_by(Account.user_id).limit(ACCOUNTS_BATCH)
            ).all()
        if not batch:
            return
        pending = [a for a in batch if a.key_status == "pending"]
        missing = [a for a in batch if a.key_status == "active" and a.key_hash not in seen]
        for account in pending:
            _pending(account.user_id, fix, report)
        for start in range(0, len(missing), CONFIRM_CHUNK):
            _check_alone(missing[start:start + CONFIRM_CHUNK], fix, report, pushes)
        after = batch[-1].user_id


def _check_alone(accounts: list, fix: bool, report: Report, pushes: list[str]) -> None:
    """Accounts the listing did not show: their keys read one by one (/key/info)."""
    report.checked += len(accounts)
    read = _confirm([a.user_id for a in accounts], fix, report, pushes)
    with session_scope() as session:
        spent = ledger.spent_totals(session, [a.user_id for a in accounts])
    check_spend([SpendSeen(a.user_id, a.key_hash, a.created_at, read[a.user_id].spend, spent[a.user_id],
                           read[a.user_id].budget_duration) for a in accounts if a.user_id in read], fix, report)


def _pending(user_id: str, fix: bool, report: Report) -> None:
    """A key never provisioned (its signup or payment task is still retrying, or was lost)."""
    report.checked += 1
    report.pending.append(user_id)
    if not fix:
        return
    try:
        if sync_key(user_id) is not None:
            report.fixed += 1
    except (proxy.ProxyError, Rejected) as exc:
        report.key_error(user_id, exc, "budget")
