"""Between a request and the queue: an event is acknowledged only once it is on its Redis list.

The producer (worker.producer) validates, signs and sends; its send returns once Redis has the
message (kombu's LPUSH), and raises when Redis cannot be reached: the answer is then 503, so the
provider or the web app sends it again. A money event the worker could never apply (a charge
naming no user) is stored as a dead letter naming its reference, and that is the acknowledgement.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from schemas.events import describe
from worker.delivery import dead_letters
from worker.door.body import Refused
from worker.door.metrics import WEBHOOKS

log = logging.getLogger(__name__)
BROKER_DOWN = (OperationalError, redis.exceptions.RedisError, OSError)
RETRY_AFTER = {"Retry-After": "30"}

Publish = Callable[[dict[str, Any]], str]
Answer = tuple[str, dict[str, Any]]  # (the metrics outcome, the JSON answer)


def queue(publish: Publish, event: dict[str, Any]) -> str:
    """The task id once the event is queued; pydantic.ValidationError if it is not an event; 503
    (Refused) when Redis cannot take it."""
    try:
        return publish(event)
    except BROKER_DOWN as exc:
        log.warning("could not queue an event, answering 503: %s", type(exc).__name__)
        raise Refused(503, "the queue is unavailable; send it again later", "unavailable", RETRY_AFTER) from None


def set_aside(task_name: str, event: dict[str, Any], reason: str) -> int:
    try:
        return dead_letters.store(task_name, event, reason)
    except SQLAlchemyError:
        log.warning("could not store a dead letter, answering 503")
        raise Refused(503, "the database is unavailable; send it again later", "unavailable", RETRY_AFTER) from None


def send(provider: str, what: str, publish: Publish, event: dict[str, Any], user_hint: str) -> Answer:
    """Queue a provider's money event, or set it aside as a dead letter naming its reference."""
    event = {k: v for k, v in event.items() if v is not None}
    reference = event.get("reference") or event.get("refund_reference")
    try:
        task_id = queue(publish, event)
    except ValidationError as exc:
        missing_user = any(e["loc"] == ("user_id",) and e["type"] == "missing" for e in exc.errors())
        why = f"names no user (the checkout must carry {user_hint})" if missing_user else describe(exc)
        reason = (f"{provider} {what} {reference!r} cannot be applied: {why}; credit it by hand "
                  "(litellm-credits publish) once the user is known")
        letter = set_aside(f"webhooks.{provider}", event, reason)
        log.error("%s %s %r set aside as dead letter %d", provider, what, reference, letter)
        return "dead_letter", {"status": "dead_letter", "dead_letter_id": letter}
    log.info("%s %s %r queued", provider, what, reference, extra={"task_id": task_id})
    return "queued", {"status": "queued", "task_id": task_id}


async def webhook(provider: str, verified: Callable[[], Awaitable[dict[str, Any]]],
                  handle: Callable[[dict[str, Any]], Answer]) -> dict[str, Any]:
    """Verify (before any parsing), then map and queue off the event loop; count the outcome."""
    try:
        payload = await verified()
        outcome, answer = await run_in_threadpool(handle, payload)
    except Refused as refused:
        WEBHOOKS.labels(provider, refused.outcome).inc()
        raise
    WEBHOOKS.labels(provider, outcome).inc()
    return answer


def ignored(provider: str, kind: Any) -> Answer:
    log.info("%s event %.64s ignored", provider, str(kind))
    return "ignored", {"status": "ignored"}
