"""Usage the windows missed: a key whose spend on the proxy is above the ledger's.

Windows are verified only SPEND_VERIFY_S back, so a row the proxy files later than that is never
seen by the sync. The key's own spend total on the proxy still counts it, and reconcile compares
the two; where the proxy's is higher it calls `repair_key`. That narrows down where the key's
rows are missing by comparing the proxy's count of them (`/spend/logs/v2?api_key=`) with what is
stored, halving the range while they differ, and reads only the small ranges that differ. Rows
are written like any read, deduplicated by request_id, so a repair never charges twice.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from worker import proxy
from worker.db import session_scope
from worker.models import Account, LedgerEntry
from worker.money import PROXY_TOLERANCE, money
from worker.settings import get_settings
from worker.spend import runs as spend_runs
from worker.spend.fetch import ProxySource
from worker.spend.ingest import Counts
from worker.spend.pace import api_slot
from worker.spend.read import read_range
from worker.spend.retention import kept_from
from worker.spend.windows import Window, as_query, whole_second

log = logging.getLogger(__name__)
READ_AT_ONCE = 1000  # rows: below this a differing range is read rather than halved again
UNSYNCED_MAX_PAGES = 5


def repair_key(user_id: str, key_hash: str, since: datetime, now: datetime) -> Counts:
    """Store the key's rows from `since` up to the settle time that are missing; returns what it did."""
    counts = Counts()
    end = whole_second(now - timedelta(seconds=get_settings().spend_settle_s))
    with session_scope() as session:
        since = max(since, kept_from(session) or since)  # older rows are no longer stored to compare with
    if whole_second(since) < end:
        _mend(ProxySource(api_key=key_hash), user_id, Window(whole_second(since), end), counts)
    if counts.inserted:
        log.warning("spend repaired for %s: %d rows the spend sync missed, %d debited", user_id,
                    counts.inserted, counts.debited, extra={"user_id": user_id})
    return counts


def unsynced_explains(session: Session, key_hash: str, proxy_spend: Decimal) -> bool:
    """True when the gap is only rows the sync has not reached yet (the settle window).

    Expected proxy spend = our usage before the cursor's second + the proxy's own rows for the
    key from that second on. Costs one or two spend-log requests, only for a mismatched key.
    """
    position = spend_runs.cursor(session)
    if position is None:
        return False
    since = whole_second(position.position)
    before = Decimal(session.execute(
        select(func.coalesce(func.sum(LedgerEntry.spent_usd), 0)).join(Account, Account.user_id == LedgerEntry.user_id)
        .where(Account.key_hash == key_hash, LedgerEntry.kind == "usage", LedgerEntry.occurred_at < since)
    ).scalar_one())
    unsynced, page_number = Decimal(0), 1
    while page_number <= UNSYNCED_MAX_PAGES:
        with api_slot():
            page = proxy.spend_logs(as_query(since), as_query(datetime.now(UTC) + timedelta(seconds=1)),
                                    page_number, 1000, api_key=key_hash)
        unsynced += sum((money(row.spend) for row in page.data), Decimal(0))
        if len(page.data) < 1000:
            return abs(proxy_spend - (before + unsynced)) <= PROXY_TOLERANCE
        page_number += 1
    return False


def _mend(source: ProxySource, user_id: str, window: Window, counts: Counts) -> None:
    found = source.count(window)
    counts.rows_seen += 1
    if found is not None and found == _stored(user_id, window):
        return
    halves = window.halves()
    if halves is None or (found is not None and found <= READ_AT_ONCE):
        read_range(source, window, counts)
        return
    for half in halves:
        _mend(source, user_id, half, counts)


def _stored(user_id: str, window: Window) -> int:
    with session_scope() as session:
        return session.execute(
            text("SELECT count(*) FROM spend_logs WHERE user_id = :u AND start_time >= :s AND start_time <= :e"),
            {"u": user_id, "s": window.start, "e": window.end},
        ).scalar_one()
