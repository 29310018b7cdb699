"""Logging: JSON lines or text, event context on every line, and no secret ever printed."""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from schemas.proxy import redact_keys
from worker.settings import get_settings

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("log_context", default={})  # noqa: B039 - never mutated, only replaced
_by_task: dict[str, dict[str, str]] = {}  # task id -> its last context, oldest first
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


@contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Attach fields (task id, event kind, user id, idempotency key) to every line inside."""
    token = _context.set({**_context.get(), **{k: str(v) for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def add_context(**fields: object) -> None:
    context = {**_context.get(), **{k: str(v) for k, v in fields.items() if v is not None}}
    _context.set(context)
    if "task_id" in context:
        # Celery logs a task's outcome after our context is gone: keep its fields for that line.
        _by_task.pop(context["task_id"], None)
        _by_task[context["task_id"]] = context
        while len(_by_task) > 256:
            _by_task.pop(next(iter(_by_task)))


def _celery_task_fields(record: logging.LogRecord) -> dict[str, str]:
    """Celery's received/succeeded/retry lines carry the whole task in `data`: keep who and
    which task, drop the event body (it may hold an email or a signature)."""
    data = record.__dict__.pop("data", None)
    if not isinstance(data, dict) or not data.get("id"):
        return {}
    task_id = str(data["id"])
    return {"task_id": task_id, "kind": str(data.get("name")), **_by_task.get(task_id, {})}


class Redact(logging.Filter):
    """Scrubs the master key, the encryption key and anything shaped like a virtual key."""

    def __init__(self) -> None:
        super().__init__()
        s = get_settings()
        self.secrets = [
            v.get_secret_value() for v in (s.litellm_master_key, s.key_encryption_key, s.event_signing_secret,
                                           s.paystack_secret_key, s.stripe_webhook_secret, *s.api_tokens)
            if v and v.get_secret_value()
        ]

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return redact_keys(text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self.scrub(message), None
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        for key, value in {**_celery_task_fields(record), **_context.get()}.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        return base + ("  " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")


def configure(level: str | None = None) -> None:
    s = get_settings()
    handler = logging.StreamHandler()
    handler.addFilter(Redact())
    if s.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or s.log_level).upper())
    # Warnings (Celery's, the libraries') become log lines too, so JSON output stays JSON.
    logging.captureWarnings(True)
