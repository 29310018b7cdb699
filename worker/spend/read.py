"""Bring one window up to date: read what is new in it, then make its stored rows match the source.

Pages are gathered into batches of about WRITE_ROWS rows, each written and committed before the next
is gathered (memory: a batch and a page). A window at the source's count cap is read, and verified,
as two halves sharing their middle second. A verification asks the source for the window's count and
compares it with the rows stored (and set aside); only where they differ is the range read again.
The proxy orders by startTime alone and pages by offset, so rows sharing a startTime can swap places
between two page queries and slip past a page boundary: the same check catches that, right after the
read.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import text

from worker.alerts.checks import check_alerts, near_a_threshold
from worker.db import session_scope
from worker.settings import get_settings
from worker.spend import plan
from worker.spend.ingest import Counts, stored_between, write_page
from worker.spend.rows import Rejected, Row
from worker.spend.windows import TooLarge, Window, whole_second

log = logging.getLogger(__name__)
# The proxy is read in small pages (SPEND_PAGE_SIZE) and written in batches of about this many
# rows, one transaction each: a commit per 5-row page would cost more than the rows. On a slow
# proxy the first page after WRITE_EVERY_S also writes the batch and renews the window's lease
# (2 minutes), whose longest gap is then that plus one paced request (at most a minute's wait).
WRITE_ROWS = 500
WRITE_EVERY_S = 10.0
# Checks of one window before it is left short of the source's count until its next
# verification; a shortfall is a rare tie at a page boundary, not a habit.
PASSES = 3


class Source(Protocol):
    name: str
    count_rows: int  # rows a count request fetches

    def count(self, window: Window) -> int | None: ...

    def pages(self, window: Window) -> Iterator[list[Row | Rejected]]: ...


def read_range(source: Source, window: Window, counts: Counts, owner: datetime | None = None) -> None:
    """Store every row of the range, split in halves while it is at the count cap. `owner`, the
    start of the spend window the range belongs to, has its lease renewed, and is flagged for an
    alert check if the batch stored something, in the transaction of each batch."""
    batch: list[Row | Rejected] = []
    pages, began = 0, time.monotonic()
    try:
        for page in source.pages(window):
            batch.extend(page)
            pages += 1
            if len(batch) >= WRITE_ROWS or time.monotonic() - began >= WRITE_EVERY_S:
                rows, batch = batch, []
                _write(rows, pages, window, counts, owner)
                pages, began = 0, time.monotonic()
    except TooLarge:  # raised before any row: nothing gathered
        halves = window.halves()
        if halves is None:
            raise
        log.info("spend window %s is at the source's count cap: reading it in halves", window)
        for half in halves:
            read_range(source, half, counts, owner)
        return
    except Exception:
        if batch:  # keep what was fetched before the source failed; its error is the one raised
            try:
                _write(batch, pages, window, counts, owner)
            except Exception:  # noqa: BLE001 - the rows are read again on the retry
                log.exception("spend window %s: could not keep the rows fetched before the failure", window)
        raise
    if batch:
        _write(batch, pages, window, counts, owner)
    else:
        counts.pages += pages


def _write(rows: list[Row | Rejected], pages: int, window: Window, counts: Counts, owner: datetime | None) -> None:
    with session_scope() as session:
        done = write_page(session, rows, fallback_time=window.start)
        if owner is not None:
            plan.renew(session, owner, stored_usage=done.inserted > 0)
    done.pages = pages  # pages fetched from the source, not batches written
    counts.add(done)


def settle_range(source: Source, window: Window, counts: Counts, owner: datetime | None = None
                 ) -> tuple[int | None, int]:
    """Compare the source's count with what is stored; read again where they differ.

    Returns (source count or None when only its halves could be counted, stored count) as found
    before any re-read, after which the range matches unless rows moved meanwhile."""
    found = source.count(window)
    counts.rows_seen += source.count_rows if found is None else min(source.count_rows, found)
    if found is None:
        halves = window.halves()
        if halves is None:
            read_range(source, window, counts, owner)
            return None, 0
        for half in halves:
            settle_range(source, half, counts, owner)
        with session_scope() as session:
            return None, stored_between(session, window.start, window.end)
    with session_scope() as session:
        stored = stored_between(session, window.start, window.end)
    if stored != found:
        log.info("spend window %s: %d rows stored, the %s counts %d: reading it again", window, stored,
                 source.name, found)
        read_range(source, window, counts, owner)
    return found, stored


def update_window(source: Source, start: datetime, now: datetime, counts: Counts, reader: str | None = None) -> bool:
    """Read the window's new rows, then verify all of it; False when another reader holds it.

    `reader` names the hold; a reader that comes back under the same name (a retried message)
    takes the window back even while the lease of its failed attempt runs."""
    with session_scope() as session:
        held = plan.claim(session, start, reader or uuid.uuid4().hex)
    if held is None:
        return False
    mine = Counts()
    try:
        upto = min(held.end, whole_second(now - timedelta(seconds=get_settings().spend_settle_s)))
        if upto > held.read_to:
            read_range(source, Window(held.read_to, upto), mine, held.start)
        span = Window(held.start, max(upto, held.read_to))
        for _ in range(PASSES):
            found, stored = settle_range(source, span, mine, held.start)
            if found is None or found == stored:
                break
        else:
            log.warning("spend window %s: still short of the %s's count after %d checks", span, source.name, PASSES)
        if held.alerts_due or mine.inserted:
            _check_alerts(span)  # while the window is held: no reader can flag it meanwhile
        with session_scope() as session:
            plan.release(session, held, span.end, now, found, stored)
    except BaseException:
        with session_scope() as session:
            plan.let_go(session, start)
        raise
    finally:
        counts.add(mine)
    return True


def _check_alerts(span: Window) -> None:
    """Accounts with new usage in the window may have crossed a threshold. The window stays
    flagged from the page that stored the usage until the read that checks them is recorded, so
    a check lost with a dead reader is made by the window's next reader."""
    with session_scope() as session:
        users = session.execute(
            text("SELECT DISTINCT user_id FROM spend_logs WHERE start_time >= :s AND start_time <= :e "
                 "AND user_id IS NOT NULL"), {"s": span.start, "e": span.end},
        ).scalars().all()
        near = near_a_threshold(session, users) if users else []
    if users:
        check_alerts(near)  # also delivers what an earlier check left undelivered
