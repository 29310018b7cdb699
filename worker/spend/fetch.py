"""The proxy's HTTP API as a spend source: a window's count, and its rows page by page.

`/spend/logs/v2` is preferred; a proxy without it (404) is read through `/spend/logs/ui`, the
same handler on older versions. The choice is remembered for the life of the process.

While the page in hand is handed on (and a batch of them written: worker.spend.read), the next
one is fetched on a background thread, so the proxy (the slow part: see docs/architecture.md,
"The proxy") works meanwhile; at most one page is ahead. Every request takes a slot first
(worker.spend.pace), so all readers together keep the proxy only so busy. Paging stops at a short
page or at the proxy's own total_pages, and a proxy that keeps serving full pages past its count
cap is an error, not an endless run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from schemas.proxy import SpendLogPage
from worker import proxy
from worker.settings import get_settings
from worker.spend import rows
from worker.spend.pace import api_slot
from worker.spend.windows import COUNT_CAP, TooLarge, Window, too_large

log = logging.getLogger(__name__)
V2 = "/spend/logs/v2"
UI = "/spend/logs/ui"
_path = V2
_executor: tuple[int, ThreadPoolExecutor] | None = None


class ProxySource:
    """All rows, or with `api_key` (a key's hash) only that key's rows."""

    name = "proxy"
    count_rows = 1  # a count is a page of one row

    def __init__(self, api_key: str | None = None):
        self.api_key = api_key

    def count(self, window: Window) -> int | None:
        """Rows the proxy holds in the window (one row fetched), or None at its count cap."""
        page = fetch(window, 1, 1, self.api_key)
        return None if too_large(page) else page.total

    def pages(self, window: Window) -> Iterator[list[rows.Row | rows.Rejected]]:
        """Every row of the window, a page at a time; TooLarge (before any row) at the count cap."""
        size = get_settings().spend_page_size
        most = -(-COUNT_CAP // size) + 1  # a window under the cap needs no more pages than this
        number, ahead = 1, None
        while True:
            page = ahead.result() if ahead is not None else fetch(window, number, size, self.api_key)
            if number == 1 and too_large(page):
                raise TooLarge(page.total)
            last = _is_last(page, number, size)
            if not last and number >= most:
                raise proxy.TransientProxyError(V2, f"kept serving full pages past page {most} of window {window}")
            ahead = None if last else _pool().submit(fetch, window, number + 1, size, self.api_key)
            try:
                yield [rows.from_api(item) for item in page.data]
            except BaseException:
                _drop(ahead)
                raise
            if last:
                return
            number += 1


def _is_last(page: SpendLogPage, number: int, requested: int) -> bool:
    """A short page ends the window, and so does the proxy's own page count. If the proxy quietly
    served smaller pages than asked (older versions capped /ui at 100), measure against what it
    says it served, or every window would end after its first page."""
    served = page.page_size if 0 < page.page_size < requested else requested
    return len(page.data) < served or (page.total_pages > 0 and number >= page.total_pages)


def _drop(ahead: Future | None) -> None:
    if ahead is not None:
        ahead.cancel()


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None or _executor[0] != os.getpid():  # a forked pool child starts its own
        _executor = (os.getpid(), ThreadPoolExecutor(max_workers=2, thread_name_prefix="spend-prefetch"))
    return _executor[1]


def fetch(window: Window, number: int, size: int, api_key: str | None = None) -> SpendLogPage:
    global _path
    start, end = window.query()
    path = _path
    try:
        with api_slot():
            return proxy.spend_logs(start, end, number, size, path=path, api_key=api_key)
    except proxy.PermanentProxyError as exc:
        if exc.status != 404 or path != V2:
            raise
    log.warning("%s is missing on this proxy (HTTP 404): reading %s instead", V2, UI)
    _path = UI
    with api_slot():
        return proxy.spend_logs(start, end, number, size, path=UI, api_key=api_key)
