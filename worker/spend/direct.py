"""The proxy's own PostgreSQL as a spend source, for deployments too busy for the HTTP API.

With LITELLM_DATABASE_URL set (a read-only role on the proxy's database or a replica), a
window's rows are read straight from "LiteLLM_SpendLogs" by keyset on ("startTime", request_id),
which the proxy's own index serves, in large batches and with only the columns the ledger needs.
The windows, the verification and the dedupe are the same as for the API: the filter is the
API's (both bounds inclusive, whole seconds), so a window counts the same from either source;
verification counts every window due in one grouped statement (worker.spend.verify). A database
that cannot be reached is a transient fault (worker.proxy_db.execute), retried like the API's.
tests/contract/test_direct_source.py runs this against the real proxy's database, so a schema
change in LiteLLM fails a test, not production.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from worker import proxy_db
from worker.spend import rows
from worker.spend.windows import Window

BATCH = 10_000
_COLUMNS = ('request_id, api_key, coalesce(nullif(model_group, \'\'), model), spend, prompt_tokens, '
            'completion_tokens, status, "startTime"')
_COUNT = 'SELECT count(*) FROM "LiteLLM_SpendLogs" WHERE "startTime" >= %s AND "startTime" <= %s'
_FIRST = (f'SELECT {_COLUMNS} FROM "LiteLLM_SpendLogs" WHERE "startTime" >= %s AND "startTime" <= %s '
          'ORDER BY "startTime", request_id LIMIT %s')
_NEXT = (f'SELECT {_COLUMNS} FROM "LiteLLM_SpendLogs" WHERE ("startTime", request_id) > (%s, %s) '
         'AND "startTime" <= %s ORDER BY "startTime", request_id LIMIT %s')


def _naive(value: datetime) -> datetime:
    # The proxy stores startTime as UTC without a zone.
    return value.astimezone(UTC).replace(tzinfo=None)


_COUNT_WINDOWS = ('SELECT count(l."startTime") '
                  'FROM unnest(%s::timestamp[], %s::timestamp[]) WITH ORDINALITY AS w(s, e, n) '
                  'LEFT JOIN "LiteLLM_SpendLogs" l ON l."startTime" >= w.s AND l."startTime" <= w.e '
                  'GROUP BY w.n ORDER BY w.n')


class DirectSource:
    name = "direct"
    count_rows = 0  # a count is a count(*), no row fetched

    def count(self, window: Window) -> int | None:
        return proxy_db.execute(_COUNT, (_naive(window.start), _naive(window.end)))[0][0]

    def count_windows(self, windows: list[Window]) -> list[int]:
        """Every window's count in one grouped statement (an index range scan a window)."""
        found = proxy_db.execute(_COUNT_WINDOWS, ([_naive(w.start) for w in windows], [_naive(w.end) for w in windows]))
        return [n for (n,) in found]

    def pages(self, window: Window) -> Iterator[list[rows.Row | rows.Rejected]]:
        end = _naive(window.end)
        batch = proxy_db.execute(_FIRST, (_naive(window.start), end, BATCH))
        while batch:
            yield [_row(r) for r in batch]
            if len(batch) < BATCH:
                return
            last = batch[-1]
            batch = proxy_db.execute(_NEXT, (last[7], last[0], end, BATCH))


def _row(r: tuple) -> rows.Row | rows.Rejected:
    request_id, api_key, model, spend, prompt, completion, status, start = r
    return rows.check(request_id, api_key, model, spend, prompt, completion, status, start.replace(tzinfo=UTC),
                      raw=lambda: {"request_id": request_id, "api_key": api_key, "model": model, "spend": spend,
                                   "prompt_tokens": prompt, "completion_tokens": completion, "status": status,
                                   "startTime": start.isoformat()})
