"""The direct source (worker.spend.direct) against the real proxy's own database, checked against
what the real proxy's /spend/logs/v2 serves for the same windows.

Rows are COPYed straight into the real "LiteLLM_SpendLogs" (request ids `bench12-contract-…`, in a
random hour of 2023 that holds no other row) and deleted afterwards. If LiteLLM renames or retypes a
column the direct source reads, or drops the index its keyset needs, a test here fails.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from worker import proxy as client
from worker import proxy_db
from worker.credits.ledger import money
from worker.settings import get_settings
from worker.spend import direct
from worker.spend.direct import DirectSource
from worker.spend.fetch import ProxySource
from worker.spend.rows import Row
from worker.spend.windows import Window

pytestmark = pytest.mark.real_proxy

REAL_URL = os.environ.get("REAL_LITELLM_URL")
REAL_KEY = os.environ.get("REAL_LITELLM_MASTER_KEY", "sk-master-1234")
REAL_DB = os.environ.get("REAL_LITELLM_DB", "postgresql://litellm:litellm@127.0.0.1:5432/litellm_real")
PREFIX = "bench12-contract-"
WINDOW = timedelta(seconds=300)
# What the direct source selects, with the types it reads them as.
COLUMNS = {"request_id": "text", "api_key": "text", "model": "text", "model_group": "text",
           "spend": "double precision", "prompt_tokens": "integer", "completion_tokens": "integer",
           "status": "text", "startTime": "timestamp without time zone"}
KEY_A, KEY_B = "a" * 64, "b" * 64


@dataclass(frozen=True)
class Inserted:
    request_id: str
    api_key: str
    spend: float
    model: str
    model_group: str | None
    status: str
    start: datetime  # naive UTC, as the proxy stores it

    @property
    def expected(self) -> tuple[str, Decimal, str, datetime]:
        return (self.request_id, money(Decimal(str(self.spend))), self.model_group or self.model,
                self.start.replace(tzinfo=UTC))


@pytest.fixture
def real(monkeypatch: pytest.MonkeyPatch) -> Iterator[psycopg.Connection]:
    """Settings pointing at the real proxy and its database; yields a connection to that database."""
    if not REAL_URL:
        pytest.skip("REAL_LITELLM_URL is not set")
    monkeypatch.setenv("LITELLM_BASE_URL", REAL_URL)
    monkeypatch.setenv("LITELLM_MASTER_KEY", REAL_KEY)
    monkeypatch.setenv("PROXY_TIMEOUT_S", "10")
    monkeypatch.setenv("LITELLM_DATABASE_URL", REAL_DB)
    get_settings.cache_clear()
    client.reset_client()
    proxy_db.reset()
    with psycopg.connect(REAL_DB, autocommit=True) as conn:
        yield conn
        conn.execute('DELETE FROM "LiteLLM_SpendLogs" WHERE request_id LIKE %s', (PREFIX + "%",))
    proxy_db.reset()
    client.reset_client()
    get_settings.cache_clear()


def _quiet_hour(conn: psycopg.Connection) -> datetime:
    """A random whole hour of 2023 with no row in the proxy's table (naive UTC)."""
    for _ in range(20):
        t0 = datetime(2023, 1, 1) + timedelta(hours=random.randrange(365 * 24))
        if conn.execute('SELECT count(*) FROM "LiteLLM_SpendLogs" WHERE "startTime" BETWEEN %s AND %s',
                        (t0 - timedelta(hours=1), t0 + timedelta(hours=2))).fetchone()[0] == 0:
            return t0
    raise AssertionError("no quiet hour found in 2023")


def _insert(conn: psycopg.Connection, rows: list[Inserted]) -> None:
    cols = ('request_id, call_type, api_key, spend, total_tokens, prompt_tokens, completion_tokens, "startTime", '
            '"endTime", model, model_group, status, metadata')
    with conn.cursor() as cur, cur.copy(f'COPY "LiteLLM_SpendLogs" ({cols}) FROM STDIN') as copy:
        for i, r in enumerate(rows):
            copy.write_row((r.request_id, "acompletion", r.api_key, r.spend, 30 + i % 7, 20, 10 + i % 7, r.start,
                            r.start + timedelta(milliseconds=800), r.model, r.model_group, r.status, "{}"))


def _rows(t0: datetime, tag: str, n: int = 300) -> list[Inserted]:
    """n rows over three windows from t0, with: a row exactly on each inner boundary, one on the
    first window's start and one on the last one's end, rows sharing a startTime (the keyset's tie
    break), spends with many digits and zero, an empty model_group, a failure, two keys."""
    rng = random.Random(tag)
    span_ms = int(3 * WINDOW.total_seconds() * 1000)
    times = [ms for ms in (rng.randrange(1, span_ms) for _ in range(2 * n)) if ms % 300_000][:n - 14]
    fixed = [0, 300_000, 300_000, 600_000, 900_000] + [123_456] * 5 + [600_500] * 4  # ties and edges
    rows = []
    for i, ms in enumerate(sorted(times + fixed)):
        spend = 0.0 if i % 25 == 0 else rng.choice([1e-7, 0.1, 0.000123456789012, rng.random() / 100])
        rows.append(Inserted(f"{PREFIX}{tag}-{i:04d}", KEY_A if i % 3 else KEY_B, spend, "openai/fake-gpt",
                             None if i % 11 == 0 else ("" if i % 7 == 0 else "fake-gpt"),
                             "failure" if i % 25 == 0 else "success", t0 + timedelta(milliseconds=ms)))
    return rows


def _window(t0: datetime, k: int) -> Window:
    start = t0.replace(tzinfo=UTC) + k * WINDOW
    return Window(start, start + WINDOW)


def _in(rows: list[Inserted], w: Window) -> list[tuple[str, Decimal, str, datetime]]:
    return sorted(r.expected for r in rows if w.start <= r.start.replace(tzinfo=UTC) <= w.end)


def _read(source: DirectSource | ProxySource, w: Window) -> list[tuple[str, Decimal, str | None, datetime]]:
    got = [r for page in source.pages(w) for r in page]
    assert all(isinstance(r, Row) for r in got), [r for r in got if not isinstance(r, Row)]
    return sorted((r.request_id, r.spend, r.model, r.start_time) for r in got)


def test_the_columns_and_index_the_direct_source_reads_exist(real):
    found = dict(real.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'LiteLLM_SpendLogs'"
    ).fetchall())
    assert {c: found.get(c) for c in COLUMNS} == COLUMNS
    indexes = [r[0] for r in real.execute(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'LiteLLM_SpendLogs'").fetchall()]
    assert any('("startTime", request_id)' in d for d in indexes), indexes  # the keyset's order
    # The source's own statements run as written on this schema.
    w = Window(datetime(2000, 1, 1, tzinfo=UTC), datetime(2000, 1, 1, 0, 5, tzinfo=UTC))
    assert DirectSource().count(w) == 0 and list(DirectSource().pages(w)) == []


def test_direct_source_gives_the_proxys_count_and_rows(real, monkeypatch):
    t0, tag = _quiet_hour(real), uuid.uuid4().hex[:8]
    rows = _rows(t0, tag)
    _insert(real, rows)
    monkeypatch.setattr(direct, "BATCH", 7)  # keyset continuation, through the ties, many times
    spans = [_window(t0, k) for k in range(3)] + [Window(_window(t0, 0).start, _window(t0, 2).end)]
    for w in spans:
        expected = _in(rows, w)
        assert DirectSource().count(w) == ProxySource().count(w) == len(expected), w
        assert _read(DirectSource(), w) == _read(ProxySource(), w) == expected, w
    # The boundary row is in both windows that share its second, from either source.
    boundary = next(r.request_id for r in rows if r.start == t0 + WINDOW)
    for w in spans[:2]:
        assert boundary in {r[0] for r in _read(DirectSource(), w)}
    assert sum(len(_in(rows, w)) for w in spans[:3]) == len(rows) + 3  # three rows sit on a shared second


def test_spend_logs_filter_by_api_key_on_the_real_proxy(real):
    """worker/spend/repair.py reads one key's rows through ProxySource(api_key=...)."""
    t0, tag = _quiet_hour(real), uuid.uuid4().hex[:8]
    rows = _rows(t0, tag, n=120)
    _insert(real, rows)
    w = Window(_window(t0, 0).start, _window(t0, 2).end)
    mine = [r for r in rows if r.api_key == KEY_B]
    assert 0 < len(mine) < len(rows)
    assert ProxySource().count(w) == len(rows)
    assert ProxySource(api_key=KEY_B).count(w) == len(mine)
    assert _read(ProxySource(api_key=KEY_B), w) == sorted(r.expected for r in mine)


def test_the_readme_read_only_role_reads_spend_rows_and_keys(real):
    """docs/spend-sync.md's role for LITELLM_DATABASE_URL, created as written on the real proxy's
    database (under another name): the direct source and reconcile's key source both read through it."""
    from tests.readme_blocks import proxy_reader_role
    from worker.credits import key_sources

    sql = proxy_reader_role()
    database = REAL_DB.rsplit("/", 1)[1]
    role = f"credits_reader_{uuid.uuid4().hex[:6]}"
    sql = sql.replace("credits_reader", role).replace("DATABASE litellm ", f"DATABASE {database} ")
    admin_url = f"postgresql://postgres@127.0.0.1:5432/{database}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        try:
            admin.execute(sql)
            get_settings.cache_clear()
            os.environ["LITELLM_DATABASE_URL"] = f"postgresql://{role}:choose-one@127.0.0.1:5432/{database}"
            proxy_db.reset()
            w = Window(datetime(2000, 1, 1, tzinfo=UTC), datetime(2000, 1, 1, 0, 5, tzinfo=UTC))
            assert DirectSource().count(w) == 0 and list(DirectSource().pages(w)) == []
            assert all(isinstance(page, list) for page in key_sources.listed_keys())
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                proxy_db.connection().execute('DELETE FROM "LiteLLM_SpendLogs" WHERE false')
        finally:
            proxy_db.reset()
            os.environ["LITELLM_DATABASE_URL"] = REAL_DB
            get_settings.cache_clear()
            admin.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_a_row_the_direct_source_sets_aside_keeps_what_its_replay_stores(real):
    """A dead letter's row from the proxy's table is read again by replay as a /spend/logs row:
    with its tokens, so daily_usage counts them once it is stored."""
    import json

    from schemas.proxy import SpendLogRow
    from worker.spend.rows import Rejected, payload

    t0, tag = _quiet_hour(real), uuid.uuid4().hex[:8]
    _insert(real, [Inserted(f"{PREFIX}{tag}-big", KEY_A, 5000.0, "openai/fake-gpt", "fake-gpt", "success",
                            t0 + timedelta(seconds=10))])
    (got,) = [r for page in DirectSource().pages(_window(t0, 0)) for r in page]
    assert isinstance(got, Rejected) and "SPEND_ROW_MAX_USD" in got.reason
    again = SpendLogRow.model_validate(json.loads(payload(got))["row"])
    kept = (again.request_id, again.spend, again.prompt_tokens, again.completion_tokens)
    assert kept == (got.request_id, 5000, 20, 10)
