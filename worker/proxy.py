"""The LiteLLM proxy's admin API over one pooled httpx client per process.

Connection errors, timeouts, 429 and 5xx are `TransientProxyError` (the task retries with
backoff); any other 4xx is `PermanentProxyError`. Errors and logs never carry the master key.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
from pydantic import ValidationError

from schemas.proxy import BulkUpdateResponse, GeneratedKey, KeyInfoResponse, KeyListPage, SpendLogPage, redact_keys
from worker.settings import get_settings


class ProxyError(Exception):
    def __init__(self, endpoint: str, message: str, status: int | None = None):
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint
        self.status = status


class TransientProxyError(ProxyError):
    """Worth retrying: the proxy is down, slow, overloaded or failing inside."""


class PermanentProxyError(ProxyError):
    """The proxy refused the request itself; retrying the same request will not help."""


# Observers get (endpoint, seconds, outcome); worker.metrics registers one.
observers: list[Callable[[str, float, str], None]] = []

_client: httpx.Client | None = None
_client_pid: int | None = None


def client() -> httpx.Client:
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        s = get_settings()
        _client = httpx.Client(
            base_url=s.litellm_base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {s.required('litellm_master_key').get_secret_value()}"},
            timeout=httpx.Timeout(s.proxy_timeout_s, connect=min(5.0, s.proxy_timeout_s)),
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )
        _client_pid = os.getpid()
    return _client


def reset_client() -> None:
    global _client
    if _client is not None:
        _client.close()
    _client = None


def _scrub(text: str) -> str:
    # An error body may echo the request (FastAPI's 422 carries its `input`), and these messages
    # end up in dead letters and push_error.
    secret = get_settings().litellm_master_key
    text = text.replace(secret.get_secret_value(), "***") if secret and secret.get_secret_value() else text
    return redact_keys(text)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict):
            err = body.get("error") or body.get("detail") or body
            if isinstance(err, dict):
                err = err.get("message") or err.get("error") or err
            return _scrub(str(err))[:500]
    except ValueError:
        pass
    return _scrub(response.text)[:500]


def call(method: str, endpoint: str, *, raw: bool = False, **kwargs: Any) -> Any:
    """One request; returns the decoded JSON body (with raw=True, its bytes, left for the
    caller to parse) or raises a classified ProxyError."""
    started = time.perf_counter()
    outcome = "error"
    try:
        try:
            response = client().request(method, endpoint, **kwargs)
        except httpx.TimeoutException:
            raise TransientProxyError(endpoint, "timed out") from None
        except httpx.TransportError as exc:
            raise TransientProxyError(endpoint, f"unreachable ({type(exc).__name__})") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientProxyError(
                endpoint, f"HTTP {response.status_code} {_detail(response)}", response.status_code
            )
        if response.status_code >= 400:
            raise PermanentProxyError(
                endpoint, f"HTTP {response.status_code} {_detail(response)}", response.status_code
            )
        if raw:
            outcome = "ok"
            return response.content
        try:
            body = response.json()
        except ValueError:
            raise TransientProxyError(endpoint, "answered with a body that is not JSON") from None
        outcome = "ok"
        return body
    finally:
        for observe in observers:
            observe(endpoint, time.perf_counter() - started, outcome)


def generate_key(key: str, alias: str, user_id: str, max_budget: Decimal) -> GeneratedKey:
    body = {
        "key": key,
        "key_alias": alias,
        "user_id": user_id,
        "max_budget": float(max_budget),
        "metadata": {"managed_by": "litellm-credits"},
    }
    return GeneratedKey.model_validate(call("POST", "/key/generate", json=body))


def key_info(key_or_hash: str) -> KeyInfoResponse:
    return KeyInfoResponse.model_validate(call("GET", "/key/info", params={"key": key_or_hash}))


def restore_spend(key_hash: str, spend: Decimal | None) -> None:
    """The key's budget_duration cleared (a periodic reset would zero its counter), and its spend
    counter set back to an absolute value when one is given: the key then allows no more than
    max_budget minus what the ledger has used."""
    body: dict[str, object] = {"key": key_hash, "budget_duration": None}
    if spend is not None:
        body["spend"] = float(spend)
    call("POST", "/key/update", json=body)


# The real proxy's largest /key/list page.
KEY_LIST_MAX = 100


def list_keys(alias_prefix: str, page: int, size: int = KEY_LIST_MAX, sort_by: str = "key_alias") -> KeyListPage:
    """One page of the keys whose alias contains `alias_prefix` (the proxy matches a substring,
    case-insensitively: callers keep only the aliases that start with it): in alias order (stable,
    aliases are unique), or with sort_by="updated_at" the most recently written first."""
    order = "asc" if sort_by == "key_alias" else "desc"
    return KeyListPage.model_validate(call("GET", "/key/list", params={
        "return_full_object": "true", "key_alias": alias_prefix, "substring_matching": "true",
        "sort_by": sort_by, "sort_order": order, "page": page, "size": size}))


def set_max_budget(key_hash: str, max_budget: Decimal) -> None:
    """Absolute, never an increment: pushing the same value twice changes nothing."""
    call("POST", "/key/update", json={"key": key_hash, "max_budget": float(max_budget)})


# The real proxy refuses a /key/bulk_update of more than 500 keys and applies them one by one, so
# a chunk must stay well inside one request's timeout (timings: docs/architecture.md, "The proxy").
BULK_UPDATE_CHUNK = 100


def set_max_budgets(budgets: dict[str, Decimal]) -> dict[str, PermanentProxyError]:
    """Several keys' max_budget (by key hash) in one request per 100; returns the keys the proxy
    refused, each with its reason. A transport or server error raises for all of them."""
    refused: dict[str, PermanentProxyError] = {}
    items = list(budgets.items())
    for start in range(0, len(items), BULK_UPDATE_CHUNK):
        chunk = dict(items[start:start + BULK_UPDATE_CHUNK])
        try:
            answer = BulkUpdateResponse.model_validate(call("POST", "/key/bulk_update", json={
                "keys": [{"key": key, "max_budget": float(value)} for key, value in chunk.items()]}))
        except TransientProxyError:
            # The real proxy looks an unknown key up three times with backoff inside the request,
            # so one key deleted on the proxy can hold a whole chunk past the timeout, on every
            # retry. One by one, an unknown key is a quick 404 and the rest
            # go through; absolute values make keys the timed-out request did set harmless.
            refused.update(_one_by_one(chunk))
            continue
        for failed in answer.failed_updates:
            refused[failed.key] = PermanentProxyError("/key/bulk_update", _scrub(failed.failed_reason)[:500])
    return refused


def _one_by_one(budgets: dict[str, Decimal]) -> dict[str, PermanentProxyError]:
    refused: dict[str, PermanentProxyError] = {}
    for key, value in budgets.items():
        try:
            set_max_budget(key, value)
        except PermanentProxyError as exc:
            refused[key] = exc
    return refused


def spend_logs(start: str, end: str, page: int, page_size: int, path: str = "/spend/logs/v2",
               api_key: str | None = None) -> SpendLogPage:
    """One page, parsed once, straight from the bytes by pydantic's JSON parser: a page is 1,000
    rows of about 10 KB each (mostly metadata we ignore), and going through json.loads first
    would build every ignored field as Python objects, at several times the time and memory."""
    params = {"start_date": start, "end_date": end, "page": page, "page_size": page_size}
    if api_key:
        params["api_key"] = api_key
    body = call("GET", path, params=params, raw=True)
    try:
        return SpendLogPage.model_validate_json(body)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise TransientProxyError(path, "answered with a body that is not JSON") from None
        raise
