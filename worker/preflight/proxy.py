"""The LiteLLM proxy: reachable, the master key accepted, its version, spend logs readable
(through /spend/logs/v2, or LITELLM_DATABASE_URL's tables through its read-only role)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from worker.preflight.findings import Finding, fail, first_line, ok, safe_url, warn

TESTED_VERSION = "1.106.2"
REFUSED = (401, 403)


def unreachable(client: httpx.Client) -> Finding | None:
    """None when the proxy answers; else the failure."""
    try:
        answer = client.get("/health/readiness")
    except httpx.HTTPError as exc:
        return fail("proxy", f"cannot reach {client.base_url} ({type(exc).__name__}); check LITELLM_BASE_URL "
                             "and that the proxy is running")
    if answer.status_code >= 400:
        return fail("proxy", f"{client.base_url} answered /health/readiness with HTTP {answer.status_code}: is "
                             "LITELLM_BASE_URL the proxy, and is the proxy's database up?")
    return None


def key_accepted(client: httpx.Client) -> Finding:
    """The admin API as the worker uses it (reconcile lists keys)."""
    try:
        answer = client.get("/key/list", params={"page": 1, "size": 1})
    except httpx.HTTPError as exc:
        return warn("master key", f"not confirmed: {type(exc).__name__} on /key/list; check LITELLM_BASE_URL")
    if answer.status_code in REFUSED:
        return fail("master key", f"the proxy refuses LITELLM_MASTER_KEY (HTTP {answer.status_code}); set it to "
                                  "the proxy's master key")
    if answer.status_code >= 400:
        return warn("master key", f"/key/list answered HTTP {answer.status_code}; the key could not be confirmed")
    return ok("master key", "accepted by the proxy")


def version(client: httpx.Client, authorized: bool = True) -> Finding:
    found = None
    for path in ("/health/readiness/details", "/health/readiness"):  # the second on older proxies
        try:
            answer = client.get(path)
            found = answer.json().get("litellm_version") if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            found = None
        if found:
            break
    if not found:
        why = "it does not report its version" if authorized else "its version is not read with a refused key"
        return ok("proxy", f"{client.base_url} reachable; {why} (tested: {TESTED_VERSION})")
    if found != TESTED_VERSION:
        return warn("proxy", f"{client.base_url} reachable, LiteLLM {found}; this release is tested with "
                             f"{TESTED_VERSION}")
    return ok("proxy", f"{client.base_url} reachable, LiteLLM {found} (the tested version)")


def spend_logs_api(client: httpx.Client) -> Finding:
    now = datetime.now(UTC).replace(microsecond=0)
    window = {"start_date": f"{now - timedelta(seconds=1):%Y-%m-%d %H:%M:%S}", "end_date": f"{now:%Y-%m-%d %H:%M:%S}",
              "page": 1, "page_size": 1}
    status = None
    for path in ("/spend/logs/v2", "/spend/logs/ui"):  # as worker.spend.fetch falls back
        try:
            answer = client.get(path, params=window)
        except httpx.HTTPError as exc:
            return fail("spend logs", f"{path}: {type(exc).__name__}; check LITELLM_BASE_URL")
        status = answer.status_code
        if status == 200:
            return ok("spend logs", f"readable through {path}")
        if status != 404:
            break
    hint = ("set LITELLM_MASTER_KEY to the proxy's master key" if status in REFUSED else
            "is the proxy's database up? (or read the spend logs from it directly: LITELLM_DATABASE_URL)")
    return fail("spend logs", f"{path} answered HTTP {status}; {hint}")


def spend_logs_direct(url: str) -> Finding:
    where = safe_url(url)
    try:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), connect_timeout=5,
                             autocommit=True) as conn:
            conn.execute("SET default_transaction_read_only = on")
            for table in ('"LiteLLM_SpendLogs"', '"LiteLLM_VerificationToken"'):
                conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall()
    except psycopg.Error as exc:
        return fail("spend logs", f"{where}: {first_line(exc)}; check LITELLM_DATABASE_URL and its read-only "
                                  "role's grants")
    return ok("spend logs", f"readable straight from {where} (LITELLM_DATABASE_URL)")


def client_for(base_url: str, master_key: str, timeout_s: float) -> httpx.Client:
    return httpx.Client(base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {master_key}"},
                        timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)))


def proxy(base_url: str, master_key: str, timeout_s: float, database_url: str | None) -> list[Finding]:
    with client_for(base_url, master_key, timeout_s) as client:
        down = unreachable(client)
        if down:
            return [down]
        key = key_accepted(client)
        found = [version(client, key.level != "fail"), key]
        if key.level != "fail":
            found.append(spend_logs_direct(database_url) if database_url else spend_logs_api(client))
        return found
