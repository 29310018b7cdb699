"""Celery's consumer, with every message it cannot run stored as a dead letter instead of dropped."""

from __future__ import annotations

from typing import Any

from celery.utils.log import get_logger
from celery.worker.consumer import Consumer as CeleryConsumer

from worker.delivery import dead_letters

log = get_logger(__name__)


def _store(message: Any, reason: str) -> None:
    headers = getattr(message, "headers", None) or {}
    name = headers.get("task") if isinstance(headers, dict) else None
    try:
        dead_letters.store(str(name or "unknown"), getattr(message, "body", b""), reason)
    except Exception:  # the database is down: the log line is the last record of it
        log.exception("could not dead-letter a message (%s): %r", reason, getattr(message, "body", b"")[:4096])


class Consumer(CeleryConsumer):
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        _store(message, f"message body cannot be decoded: {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        _store(message, "not a task message (no task name in its headers)")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        _store(message, f"unknown task name: {exc}")
        # Not super(): it would record a failure in a result backend we do not have.
        message.reject_log_error(log, self.connection_errors)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        _store(message, f"invalid task message: {exc}")
        super().on_invalid_task(body, message, exc)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's handler, but a message it raises on is dead-lettered instead of crashing the
        worker (worker.delivery.broker refuses malformed envelopes first; this is the net behind it)."""
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            try:
                return handle(message)
            except self.connection_errors:
                raise
            except Exception as exc:
                log.exception("could not hand a message to the pool")
                _store(message, f"invalid task message: {type(exc).__name__}: {exc}"[:500])
                if not message.acknowledged:
                    message.reject_log_error(log, self.connection_errors)
                return None

        return on_task_received
