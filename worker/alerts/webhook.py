"""POST one balance alert to ALERT_WEBHOOK_URL; the Celery task around it owns the retries."""

from __future__ import annotations

from typing import Any

import httpx

from worker.errors import Rejected
from worker.proxy import TransientProxyError
from worker.settings import get_settings


class WebhookUnavailable(TransientProxyError):
    """The receiver is down, slow or failing: retried with the same backoff as the proxy."""


def post(alert: dict[str, Any]) -> None:
    url = get_settings().alert_webhook_url
    if not url:
        return  # switched off since the alert was queued: nothing left to do
    # The alert id doubles as an idempotency key: a retry after a lost response repeats it.
    headers = {"Idempotency-Key": str(alert.get("alert_id", ""))}
    try:
        response = httpx.post(url, json=alert, headers=headers, timeout=get_settings().proxy_timeout_s)
    except httpx.HTTPError as exc:
        raise WebhookUnavailable("alert webhook", f"unreachable ({type(exc).__name__})") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise WebhookUnavailable("alert webhook", f"HTTP {response.status_code}", response.status_code)
    if response.status_code >= 400:
        raise Rejected(f"alert webhook refused the alert: HTTP {response.status_code} {response.text[:200]}")
