"""Read one window of spend logs into the database, page by page, and move the cursor past it.

Each page is written and committed before the next is fetched (memory: one page). The cursor
moves only in the transaction of the window's last page, and only once the rows stored for the
window are at least what the proxy counted on the first page: the proxy orders by startTime
alone and pages by offset, so rows sharing a startTime can swap places between two page
queries and one can slip past the page boundary unseen. Such a window is read again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from worker.db import session_scope
from worker.settings import get_settings
from worker.spend import runs as spend_runs
from worker.spend.fetch import fetch_page, is_last, prefetch
from worker.spend.ingest import Counts, stored_between, write_page
from worker.spend.windows import Window, too_large

log = logging.getLogger(__name__)
# Reads of one window before it is accepted short of the proxy's count (the look-back of the
# next runs still re-reads it); a shortfall is a rare tie at a page boundary, not a habit.
PASSES = 3


def read_window(window: Window, counts: Counts, done: Callable[[Window], None],
                following: Window | None = None) -> None:
    """Store every row of the window, splitting it first if its count reaches the cap.

    `following`, the window the caller reads next, has its first page fetched in the background
    while this window's last page is written."""
    for attempt in range(1, PASSES + 1):
        if _page_through(window, counts, done, final=attempt == PASSES, following=following):
            return
        log.warning("spend window %s: fewer rows stored than the proxy counted; reading it again", window)


def _page_through(window: Window, counts: Counts, done: Callable[[Window], None], final: bool,
                  following: Window | None = None) -> bool:
    """One pass over the window; False if it ended short of the count (rows stored, cursor kept)."""
    size = get_settings().spend_page_size
    number, expected = 1, 0
    while True:
        page = fetch_page(window, number, size)
        if number == 1:
            if too_large(page) and (halves := window.halves()) is not None:
                log.info("spend window %s holds %s+ rows: splitting it", window, page.total)
                read_window(halves[0], counts, done, following=halves[1])
                read_window(halves[1], counts, done, following=following)
                return True
            expected = page.total
        last = is_last(page, size)
        if not last:
            prefetch(window, number + 1, size)
        elif following is not None:
            prefetch(following, 1, size)
        with session_scope() as session:
            counts.add(write_page(session, page.data))
            short = last and stored_between(session, window.start, window.end) < expected
            if last and (final or not short):
                spend_runs.advance(session, window.start, window.end)
        if last:
            if short and not final:
                return False
            if short:
                log.warning("spend window %s: still short of the proxy's count after %d reads; moving on",
                            window, PASSES)
            done(window)
            return True
        del page  # written: let it go before the next one arrives
        number += 1
