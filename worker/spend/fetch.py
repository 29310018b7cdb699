"""Fetch one page of a spend-log window from the proxy, on whichever endpoint it has.

`/spend/logs/v2` is preferred; a proxy without it (404) is read through `/spend/logs/ui`,
the same handler on older versions. The choice is remembered for the life of the process.

`prefetch` asks for the page the reader will want next on a background thread, so the proxy
(the slow part: see docs/architecture.md, "The proxy") works while the page in hand is written;
`fetch_page` then takes that result, or its error, instead of asking again. At most one page is
ahead per thread, so memory stays at two pages.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from schemas.proxy import SpendLogPage
from worker import proxy
from worker.spend.windows import Window

log = logging.getLogger(__name__)
V2 = "/spend/logs/v2"
UI = "/spend/logs/ui"
_path = V2
_ahead = threading.local()  # .page: ((window, number, size), Future) of the caller's thread
_executor: tuple[int, ThreadPoolExecutor] | None = None


def fetch_page(window: Window, number: int, size: int) -> SpendLogPage:
    wanted = (window, number, size)
    ahead = getattr(_ahead, "page", None)
    _ahead.page = None
    if ahead is not None:
        if ahead[0] == wanted:
            return ahead[1].result()
        ahead[1].cancel()  # not the page wanted (a window read again): dropped
    return _fetch(window, number, size)


def prefetch(window: Window, number: int, size: int) -> None:
    """Start fetching this page in the background for the next fetch_page of this thread."""
    drop_prefetch()
    _ahead.page = ((window, number, size), _pool().submit(_fetch, window, number, size))


def drop_prefetch() -> None:
    ahead = getattr(_ahead, "page", None)
    _ahead.page = None
    if ahead is not None:
        ahead[1].cancel()


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None or _executor[0] != os.getpid():  # a forked pool child starts its own
        _executor = (os.getpid(), ThreadPoolExecutor(max_workers=2, thread_name_prefix="spend-prefetch"))
    return _executor[1]


def _fetch(window: Window, number: int, size: int) -> SpendLogPage:
    global _path
    start, end = window.query()
    path = _path
    try:
        return proxy.spend_logs(start, end, number, size, path=path)
    except proxy.PermanentProxyError as exc:
        if exc.status != 404 or path != V2:
            raise
    log.warning("%s is missing on this proxy (HTTP 404): reading %s instead", V2, UI)
    _path = UI
    return proxy.spend_logs(start, end, number, size, path=UI)


def is_last(page: SpendLogPage, requested: int) -> bool:
    """A short page ends the window. If the proxy quietly served smaller pages than asked
    (older versions capped /ui at 100), measure against what it says it served, or every
    window would end after its first page."""
    served = page.page_size if 0 < page.page_size < requested else requested
    return len(page.data) < served
