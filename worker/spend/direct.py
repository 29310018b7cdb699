"""The proxy's own PostgreSQL as a spend source, for deployments too busy for the HTTP API.

With LITELLM_DATABASE_URL set (a read-only role on the proxy's database or a replica), a
window's rows are read straight from "LiteLLM_SpendLogs" by keyset on ("startTime", request_id),
which the proxy's own index serves, in large batches and with only the columns the ledger needs.
The windows, the verification and the dedupe are the same as for the API: the filter is the
API's (both bounds inclusive, whole seconds), so a window counts the same from either source.
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


class DirectSource:
    name = "direct"
    count_rows = 0  # a count is a count(*), no row fetched

    def count(self, window: Window) -> int | None:
        return proxy_db.connection().execute(_COUNT, (_naive(window.start), _naive(window.end))).fetchone()[0]

    def pages(self, window: Window) -> Iterator[list[rows.Row | rows.Rejected]]:
        conn, end = proxy_db.connection(), _naive(window.end)
        batch = conn.execute(_FIRST, (_naive(window.start), end, BATCH)).fetchall()
        while batch:
            yield [_row(r) for r in batch]
            if len(batch) < BATCH:
                return
            last = batch[-1]
            batch = conn.execute(_NEXT, (last[7], last[0], end, BATCH)).fetchall()


def _row(r: tuple) -> rows.Row | rows.Rejected:
    request_id, api_key, model, spend, prompt, completion, status, start = r
    return rows.check(request_id, api_key, model, spend, prompt, completion, status, start.replace(tzinfo=UTC),
                      raw=lambda: {"request_id": request_id, "api_key": api_key, "model": model, "spend": spend,
                                   "prompt_tokens": prompt, "completion_tokens": completion, "status": status,
                                   "startTime": start.isoformat()})
