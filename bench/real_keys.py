"""Keys on the real LiteLLM proxy for the --real benches, and their removal afterwards.

Through the API (/key/generate, THREADS at a time: about 14 keys/s on the shared 2 cores), or,
for the 10,000 keys of a reconcile run, written straight into the proxy's own table
"LiteLLM_VerificationToken" (the rows /key/generate writes: token = sha256 of the key, alias,
user, max_budget, metadata), a few seconds for 10,000. Only keys this run made are removed: they
carry the run's own alias prefix (e.g. bench13-rc-1a2b3c4d-), and each alias is checked to start
with it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg

REAL_URL = "http://127.0.0.1:4000"
REAL_KEY = "sk-master-1234"
PROXY_DB = "postgresql://litellm:litellm@127.0.0.1:5432/litellm_real"  # start-litellm.sh's default
THREADS = 8  # the proxy answers several requests at once


def run_prefix(kind: str) -> str:
    return f"bench13-{kind}-{uuid.uuid4().hex[:8]}-"


def client(base_url: str, master_key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {master_key}"}, timeout=60,
                        limits=httpx.Limits(max_connections=THREADS * 2))


def make_keys(base_url: str, master_key: str, specs: Iterable[dict]) -> None:
    """POST /key/generate for each spec (key, key_alias, user_id, max_budget), THREADS at a time."""
    with client(base_url, master_key) as c, ThreadPoolExecutor(THREADS) as pool:
        for response in pool.map(lambda body: c.post("/key/generate", json=body), list(specs)):
            response.raise_for_status()


def delete_prefix(base_url: str, master_key: str, prefix: str) -> int:
    """Delete every key whose alias starts with `prefix`; returns how many."""
    deleted = 0
    with client(base_url, master_key) as c:
        while True:
            page = c.get("/key/list", params={"key_alias": prefix, "substring_matching": "true",
                                              "return_full_object": "true", "size": 100}).json()
            tokens = [k["token"] for k in page["keys"] if (k.get("key_alias") or "").startswith(prefix)]
            if not tokens:
                return deleted
            c.post("/key/delete", json={"keys": tokens}).raise_for_status()
            deleted += len(tokens)


def insert_keys(proxy_db: str, rows: Iterable[tuple[str, str, str, float]]) -> None:
    """(token, alias, user_id, max_budget) rows into the proxy's key table, in one COPY."""
    with psycopg.connect(proxy_db) as conn, conn.cursor() as cur:
        with cur.copy('COPY "LiteLLM_VerificationToken" (token, key_name, key_alias, user_id, max_budget, '
                      'spend, models, metadata, created_by, updated_by) FROM STDIN') as copy:
            for token, alias, user_id, budget in rows:
                copy.write_row((token, "sk-...bench", alias, user_id, budget, 0.0, "{}",
                                json.dumps({"managed_by": "litellm-credits"}), "bench13", "bench13"))


def sql_delete_prefix(proxy_db: str, prefix: str) -> int:
    assert prefix.startswith("bench13-") and prefix.endswith("-")
    pattern = prefix.replace("_", "\\_").replace("%", "\\%") + "%"
    with psycopg.connect(proxy_db) as conn:
        return conn.execute('DELETE FROM "LiteLLM_VerificationToken" WHERE key_alias LIKE %s', (pattern,)).rowcount
