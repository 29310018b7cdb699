"""Our keys as the proxy holds them, a page at a time: what reconcile compares with the ledger.

All of them (`listed_keys`, reconcile's full pass), or only those written since a time
(`changed_keys`: every write to a key moves its updated_at, the proxy's spend updates included,
as LiteLLM writes them through Prisma's update_many and the column is @updatedAt).

From the admin API, /key/list pages of 100 full key objects filtered to our alias prefix, in
alias order, a few pages fetched ahead in parallel (about 870 keys/s from one connection on the
real proxy; /key/info per key manages about 33). With LITELLM_DATABASE_URL set (the spend sync's
direct source: a read-only role on the proxy's database), "LiteLLM_VerificationToken" is read
instead, by keyset on key_alias, 1,000 rows a query. Each key is validated on its own: one that
cannot be read (a NaN spend, a missing token) comes out as a BadKey, the rest of its page intact.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from pydantic import ValidationError

from schemas.proxy import KeyListPage, ListedKey
from worker import proxy, proxy_db
from worker.settings import get_settings

AHEAD = 4  # pages in flight at once: the proxy answers several requests in parallel
DB_BATCH = 1000
PAGE_ATTEMPTS = 3
MAX_FAILED_PAGES = 3  # in a row: the proxy is down, not one page of it
_COLUMNS = "token, key_alias, max_budget, spend, budget_duration, updated_at"
_QUERY = (f'SELECT {_COLUMNS} FROM "LiteLLM_VerificationToken" '
          "WHERE key_alias LIKE %s ESCAPE '\\' AND key_alias > %s ORDER BY key_alias LIMIT %s")
# Served by an index on updated_at where the operator made one (docs/architecture.md); the table
# is the proxy's, and a read-only role cannot add it.
_CHANGED = (f'SELECT {_COLUMNS} FROM "LiteLLM_VerificationToken" '
            "WHERE updated_at > %s AND key_alias LIKE %s ESCAPE '\\' ORDER BY updated_at")
_NEWEST = 'SELECT max(updated_at) FROM "LiteLLM_VerificationToken" WHERE key_alias LIKE %s ESCAPE \'\\\''


@dataclass(frozen=True)
class BadKey:
    token: str | None
    key_alias: str | None
    reason: str


@dataclass(frozen=True)
class PageFailed:
    number: int
    reason: str


Page = list[ListedKey | BadKey]


def listed_keys(page_size: int = proxy.KEY_LIST_MAX) -> Iterator[Page | PageFailed]:
    """Every key whose alias starts with KEY_ALIAS_PREFIX, a page at a time, in alias order."""
    if get_settings().litellm_database_url:
        yield from _from_database(max(page_size, DB_BATCH))
    else:
        yield from _from_proxy(page_size)


def changed_keys(since: datetime, page_size: int = proxy.KEY_LIST_MAX) -> Iterator[Page | PageFailed]:
    """Our keys written since `since` (the proxy's clock), newest first through the API: a quiet
    proxy answers with one page, whatever the number of keys."""
    if get_settings().litellm_database_url:
        yield from _changed_in_database(since)
    else:
        yield from _changed_from_proxy(since, page_size)


def newest_write() -> datetime | None:
    """The newest updated_at among our keys now, by the proxy's clock (one request, or one query);
    None when it cannot be read."""
    prefix = get_settings().key_alias_prefix
    try:
        if get_settings().litellm_database_url:
            (newest,) = proxy_db.execute(_NEWEST, (_like(prefix),))[0]
            return newest.replace(tzinfo=UTC) if newest is not None and newest.tzinfo is None else newest
        keys = [k for k in _keys(_fetch(prefix, 1, 1, sort_by="updated_at"), prefix) if isinstance(k, ListedKey)]
    except (proxy.ProxyError, psycopg.Error):
        return None
    return keys[0].updated_at if keys else None


def _changed_from_proxy(since: datetime, size: int) -> Iterator[Page | PageFailed]:
    prefix = get_settings().key_alias_prefix
    number = 1
    while True:
        try:
            answer = _fetch(prefix, number, size, sort_by="updated_at")
        except proxy.ProxyError as exc:
            yield PageFailed(number, str(exc))  # which keys it held is unknown: the caller reads them all
            return
        page = _keys(answer, prefix)
        fresh = [k for k in page if isinstance(k, BadKey) or k.updated_at is None or k.updated_at > since]
        yield fresh
        # Newest first: a page reaching back past `since` is the last one needed.
        if len(fresh) < len(page) or len(answer.keys) < size or number >= answer.total_pages:
            return
        number += 1


def _changed_in_database(since: datetime) -> Iterator[Page]:
    prefix = get_settings().key_alias_prefix
    rows = proxy_db.execute(_CHANGED, (since.astimezone(UTC).replace(tzinfo=None), _like(prefix)))
    for start in range(0, len(rows), DB_BATCH):
        yield [key for r in rows[start:start + DB_BATCH] if (key := _read(_as_dict(r), prefix)) is not None]


def _like(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _as_dict(row: tuple) -> dict[str, Any]:
    return dict(zip(("token", "key_alias", "max_budget", "spend", "budget_duration", "updated_at"), row, strict=True))


def _read(raw: Any, prefix: str) -> ListedKey | BadKey | None:
    alias = raw.get("key_alias") if isinstance(raw, dict) else None
    if not isinstance(alias, str) or not alias.startswith(prefix):
        return None  # the proxy's filter is a substring match: another owner's key
    try:
        return ListedKey.model_validate(raw)
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        token = raw.get("token")
        return BadKey(token if isinstance(token, str) else None, alias, f"unreadable key: {reason}"[:500])


def _fetch(prefix: str, number: int, size: int, sort_by: str = "key_alias") -> KeyListPage:
    for attempt in range(PAGE_ATTEMPTS - 1):
        try:
            return proxy.list_keys(prefix, number, size, sort_by)
        except proxy.TransientProxyError:
            time.sleep(0.5 * 2 ** attempt)
    return proxy.list_keys(prefix, number, size, sort_by)


def _keys(answer: KeyListPage, prefix: str) -> Page:
    return [key for raw in answer.keys if (key := _read(raw, prefix)) is not None]


def _from_proxy(size: int) -> Iterator[Page | PageFailed]:
    """Pages in order, AHEAD in flight. The real proxy fails a whole page over one key it cannot
    serialise (a NaN spend): such a page is reported and its keys left to reconcile's
    one-by-one pass; only MAX_FAILED_PAGES failures in a row mean the proxy is down."""
    prefix = get_settings().key_alias_prefix
    failures, number, total = 0, 1, None
    with ThreadPoolExecutor(AHEAD) as pool:
        pending: list[tuple[int, Future[KeyListPage]]] = []
        while pending or total is None or number <= total:
            # Until one page has told the page count, one page at a time.
            while number <= (total or number) and len(pending) < (AHEAD if total else 1):
                pending.append((number, pool.submit(_fetch, prefix, number, size)))
                number += 1
            page_number, future = pending.pop(0)
            try:
                answer = future.result()
            except proxy.ProxyError as exc:
                failures += 1
                if failures >= MAX_FAILED_PAGES:
                    raise
                yield PageFailed(page_number, str(exc))
                continue
            failures, total = 0, answer.total_pages
            # Offset paging: a key made meanwhile can shift the others by one, so a key may come
            # twice (compared twice, harmless) or not at all (then it is checked on its own).
            yield _keys(answer, prefix)


def _from_database(size: int) -> Iterator[Page]:
    prefix = get_settings().key_alias_prefix
    after = ""
    while True:
        rows = proxy_db.execute(_QUERY, (_like(prefix), after, size))
        if not rows:
            return
        yield [key for r in rows if (key := _read(_as_dict(r), prefix)) is not None]
        after = rows[-1][1]
