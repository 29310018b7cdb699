"""Rows put straight into a LiteLLM proxy's own "LiteLLM_SpendLogs", as its batch writer would.

The benches that read the proxy's table (directly, or through a real proxy's /spend/logs/v2) fill
it here: `copy_ddl` gives a bench database the real proxy's table (column types and indexes taken
from the real proxy's database by pg_dump), `load` COPYs rows of a bench.spend_rows History into it
(request ids under a bench prefix, so `delete` removes only the bench's own rows).

`full=True` writes the real row shape, metadata included (about 9.9 KB of JSON a row: what the
proxy's pages carry); `full=False` leaves metadata at a small object, for loading millions of rows
into a table whose reader selects only the ledger's columns.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime

import psycopg

from bench.spend_rows import History

TABLE = '"LiteLLM_SpendLogs"'
COLUMNS = ("request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens", "completion_tokens",
           "startTime", "endTime", "completionStartTime", "model", "model_id", "model_group", "custom_llm_provider",
           "api_base", "user", "metadata", "cache_hit", "cache_key", "request_tags", "team_id", "end_user",
           "requester_ip_address", "session_id", "status", "organization_id", "agent_id", "request_duration_ms",
           "litellm_call_id")
_JSONB = {"metadata", "request_tags"}
_TIMES = {"startTime", "endTime", "completionStartTime"}


def copy_ddl(from_url: str, to_url: str) -> None:
    """Create the real proxy's table (and its indexes) in another database, dropping it first."""
    ddl = subprocess.run(["pg_dump", "--schema-only", "--no-owner", "--no-privileges", "-t", TABLE, from_url],
                         check=True, capture_output=True, text=True).stdout
    with psycopg.connect(to_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        # pg_dump's session settings empty search_path and psql meta-commands (\\restrict) are not SQL.
        conn.execute("\n".join(line for line in ddl.splitlines() if not line.startswith(("SELECT pg_catalog.", "\\"))))


def _naive(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(UTC).replace(tzinfo=None)


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)


def row_values(history: History, i: int, request_id: str, full: bool, start_ms: int | None = None) -> tuple:
    """Row i as the proxy stores it; `start_ms` files it at another time (a live feed: now)."""
    if full:
        row = json.loads(history.row_json(i))
        row["request_id"] = request_id
        shift = 0 if start_ms is None else start_ms - history.when(i)
        out = []
        for c in COLUMNS:
            v = row.get(c)
            if c in _JSONB:
                v = json.dumps(v)
            elif c in _TIMES and v is not None:
                v = _naive(v) if not shift else _ms(int(datetime.fromisoformat(v).timestamp() * 1000) + shift)
            out.append(v)
        return tuple(out)
    r = history.row(i)
    start = r.start_ms if start_ms is None else start_ms
    meta = json.dumps({"user_api_key_alias": f"bench-{r.user}", "user_api_key_user_id": r.user})
    return (request_id, "acompletion", r.api_key, r.spend, r.prompt_tokens + r.completion_tokens, r.prompt_tokens,
            r.completion_tokens, _ms(start), _ms(start + r.end_ms - r.start_ms), _ms(start + 40),
            f"openai/{r.model}", "", r.model, "openai", "", r.user, meta, "False", "", "[]", None, None, None,
            request_id, r.status, None, None, r.end_ms - r.start_ms, request_id)


def copy_rows(conn: psycopg.Connection, rows: Iterable[tuple]) -> int:
    """COPY row tuples (row_values) and commit; returns how many."""
    quoted = ", ".join(f'"{c}"' for c in COLUMNS)
    n = 0
    with conn.cursor() as cur, cur.copy(f"COPY {TABLE} ({quoted}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    conn.commit()
    return n


def load(url: str, history: History, prefix: str, indexes: Iterable[int] | None = None, full: bool = False) -> int:
    """COPY rows (all of the history, or those indexes) in one transaction; returns how many."""
    with psycopg.connect(url) as conn:
        return copy_rows(conn, (row_values(history, i, f"{prefix}{i:08d}", full)
                                for i in (indexes if indexes is not None else range(history.n))))


def delete(url: str, prefix: str) -> int:
    with psycopg.connect(url) as conn:
        deleted = conn.execute(f"DELETE FROM {TABLE} WHERE request_id LIKE %s", (prefix + "%",)).rowcount
        conn.commit()
    return deleted
