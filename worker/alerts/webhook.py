"""POST one fired balance alert to ALERT_WEBHOOK_URL; the Celery task around it owns the retries.

The alert is read from fired_alerts by id: the task's message names a row, never a body, so a
message pushed onto a queue by anyone else can at most ask for an alert the worker fired.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from worker.db import session_scope
from worker.errors import Rejected
from worker.logs import add_context
from worker.models import FiredAlert
from worker.proxy import TransientProxyError
from worker.settings import get_settings


class WebhookUnavailable(TransientProxyError):
    """The receiver is down, slow or failing: retried with the same backoff as the proxy."""


def post_fired(fired_alert_id: int) -> None:
    """POST the fired alert with this id, unless the webhook has already taken it."""
    if not get_settings().alert_webhook_url:
        return  # switched off since the alert was queued: nothing left to do
    with session_scope() as session:
        fired = session.get(FiredAlert, fired_alert_id)
        if fired is None:
            raise Rejected(f"no fired alert {fired_alert_id}: ops.alert_webhook only sends alerts the worker fired")
        if fired.webhook_posted_at is not None:
            return
        alert = fired.payload
        add_context(user_id=fired.user_id, idempotency_key=fired.alert_id)
    post(alert)
    with session_scope() as session:
        session.get(FiredAlert, fired_alert_id).webhook_posted_at = datetime.now(UTC)


def post(alert: dict[str, Any]) -> None:
    url = get_settings().alert_webhook_url
    if not url:
        return
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
