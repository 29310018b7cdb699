"""Messages that could not be applied: stored with their reason, and listed (worker.delivery.replay
sends one again or discards it)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.db import session_scope
from worker.models import DeadLetter
from worker.producer import SENSITIVE

log = logging.getLogger(__name__)
MAX_STORED_PAYLOAD = 256 * 1024


def as_text(payload: Any) -> str:
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", errors="replace")
    if not isinstance(payload, str):
        try:
            payload = json.dumps(payload, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            payload = repr(payload)
    return pg_text(payload)[:MAX_STORED_PAYLOAD]


def pg_text(text: str) -> str:
    """What PostgreSQL text can hold: NUL escaped, lone surrogates (valid JSON escapes, not UTF-8)
    backslash-escaped; everything else as it came."""
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


def store(task_name: str, payload: Any, reason: str, error: str = "", attempts: int = 1) -> int:
    """Write one dead letter in its own transaction and log it once."""
    with session_scope() as session:
        return add(session, task_name, payload, reason, error, attempts)


def add(session: Session, task_name: str, payload: Any, reason: str, error: str = "", attempts: int = 1) -> int:
    """A dead letter in the caller's transaction (committed, or not, with what it explains)."""
    # Any of these may carry what a hostile producer put in a message (a task name, a field).
    task_name, reason, error = pg_text(task_name)[:500], pg_text(reason), pg_text(error)
    letter = DeadLetter(task_name=task_name, payload=as_text(payload), reason=reason[:2000],
                        error=(error or reason)[:4000], attempts=attempts)
    session.add(letter)
    session.flush()
    log.error("dead-lettered %s: %s", task_name, reason, extra={"dead_letter_id": letter.id})
    return letter.id


def masked(payload: str) -> str:
    """A stored payload as the CLI shows it: a promo code or signature in it (in the event, or in
    a raw message's base64 body) masked, as the kwargsrepr masks them. The stored payload keeps
    them: a replay needs them."""
    try:
        data = json.loads(payload)
    except ValueError:
        return payload
    if isinstance(data, dict) and isinstance(data.get("body"), str):
        try:  # a raw Celery message: its event is inside the body
            data = {**data, "body": json.loads(base64.b64decode(data["body"], validate=True))}
        except (binascii.Error, ValueError, UnicodeDecodeError):
            pass
    return json.dumps(_mask(data), ensure_ascii=False)


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if k in SENSITIVE else _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


def list_open(session: Session, limit: int = 50, status: str = "open") -> list[DeadLetter]:
    return list(
        session.execute(
            select(DeadLetter).where(DeadLetter.status == status).order_by(DeadLetter.id.desc()).limit(limit)
        ).scalars()
    )
