"""Delivery of fired balance alerts: the Redis stream `credits.alerts`, then the optional webhook.

An alert fired in worker.alerts.checks waits in its row's `pending` column until it is on the stream,
so a Redis outage delays it instead of losing it. A crash between XADD and clearing `pending`
sends it again under the same `alert_id`, which consumers use to drop duplicates.
"""

from __future__ import annotations

import logging
import os

import redis
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from worker.app import app
from worker.db import session_scope
from worker.models import BalanceAlert, FiredAlert
from worker.settings import get_settings

log = logging.getLogger(__name__)
STREAM = "credits.alerts"
STREAM_MAXLEN = 100_000  # trimmed approximately: old alerts go, the stream never grows unbounded
WEBHOOK_TASK = "ops.alert_webhook"

_client: tuple[int, redis.Redis] | None = None


def client() -> redis.Redis:
    global _client
    if _client is None or _client[0] != os.getpid():  # a forked child must not share its parent's socket
        _client = (os.getpid(), redis.Redis.from_url(get_settings().redis_url, socket_timeout=5))
    return _client[1]


def deliver(limit: int = 500) -> int:
    """Put pending alerts on the stream and queue their webhook; returns how many went out.

    Never raises: whatever could not be delivered stays pending for the next call."""
    try:
        with session_scope() as session:
            rows = session.execute(
                select(BalanceAlert).where(BalanceAlert.pending.is_not(None))
                .order_by(BalanceAlert.last_fired_at).limit(limit).with_for_update(skip_locked=True)
            ).scalars().all()
            for row in rows:
                client().xadd(STREAM, row.pending, maxlen=STREAM_MAXLEN, approximate=True)
                fired_id = _keep(session, row)
                if get_settings().alert_webhook_url:
                    # A task, not a POST here: its retries survive a worker restart. It carries
                    # the row's id only, so no message pushed by someone else can choose a body.
                    app.send_task(WEBHOOK_TASK, kwargs={"event": {"fired_alert_id": fired_id}})
                row.pending = None
            return len(rows)
    except Exception:  # noqa: BLE001 - undelivered alerts stay pending for the next call
        log.warning("could not deliver balance alerts; they stay pending", exc_info=True)
        return 0


def _keep(session: Session, row: BalanceAlert) -> int:
    """The fired_alerts row of this alert (made now, or by a delivery that crashed before commit)."""
    alert_id = row.pending["alert_id"]
    session.execute(insert(FiredAlert).values(alert_id=alert_id, user_id=row.user_id, payload=row.pending)
                    .on_conflict_do_nothing(index_elements=["alert_id"]))
    return session.execute(select(FiredAlert.id).where(FiredAlert.alert_id == alert_id)).scalar_one()
