"""What the worker will take from a queue list: an item is checked here, before kombu or Celery
touch it, and anything they would choke on (a crash, a message lost or restored forever, a Celery
built-in run with a producer's arguments) is refused with the reason, for a dead letter."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from celery.utils.iso8601 import parse_iso8601
from kombu.utils.encoding import bytes_to_str

from schemas.routes import EVENT_TASKS, QUEUES, ROUTES
from worker.app import app
from worker.settings import get_settings


def task_queue(queue: str) -> bool:
    """One of the app's task queues (signups, payments, spend), as opposed to a reply queue of a
    remote-control client: only task messages are acknowledged, and only they must be tasks."""
    return queue in QUEUES


def envelope(raw: bytes | str, queue: str, size: int | None = None) -> dict[str, Any] | str:
    """The decoded envelope taken from `queue`, or the reason the item is not one. `size` is the
    item's length as Redis measured it (`raw` is then only its head when it is oversized)."""
    limit = get_settings().max_event_bytes * 4  # base64 body plus headers
    size = len(raw) if size is None else size
    if size > limit:
        return f"oversized message: {size} bytes > {limit}; not parsed"
    try:
        message = json.loads(bytes_to_str(raw))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return f"not a Celery message: invalid JSON ({exc})"
    if not task_queue(queue):
        if not isinstance(message, dict) or not isinstance(message.get("properties"), dict) \
                or "delivery_tag" not in message["properties"] or "body" not in message:
            return "not a kombu message: expected an object with body and properties.delivery_tag"
        return message
    return _problem(message, queue) or message


def as_taken(message: dict[str, Any], queue: str, tag: str) -> dict[str, Any]:
    """The envelope as the worker runs it. It belongs to the queue it was taken from, under the
    tag TAKE recorded it by, whatever the producer wrote: the acks, a give-back and Celery's retry
    all follow those. An event is never dropped by a deadline or time limit its producer set
    (`expires`, `timelimit`), so those are cleared, and no retry carries them; the beat's own
    jobs keep theirs (their `expires` is what stops a backlog of periodic jobs)."""
    props, headers = message["properties"], message["headers"]
    props["delivery_tag"] = tag
    props["delivery_info"] = {**props["delivery_info"], "exchange": "", "routing_key": queue}
    if headers.get("task") in EVENT_TASKS.values():
        headers["expires"] = None
        headers["timelimit"] = [None, None]
    return message


def _problem(message: Any, queue: str) -> str | None:
    """Why Celery could not run this envelope, checked before kombu or Celery touch it: anything
    they would choke on (a crash, a message lost or restored forever) is refused here."""
    if not isinstance(message, dict) or not isinstance(message.get("properties"), dict) \
            or not isinstance(message.get("headers"), dict) or not isinstance(message.get("body"), str):
        return "not a Celery message: expected an object with body (a string), headers and properties (objects)"
    props, headers, body = message["properties"], message["headers"], message["body"]
    info = props.get("delivery_info")
    if not isinstance(props.get("delivery_tag"), str) or not isinstance(info, dict) \
            or not isinstance(info.get("exchange"), str) or not isinstance(info.get("routing_key"), str):
        return ("not a Celery message: properties.delivery_tag (a string) and properties.delivery_info "
                "(exchange and routing_key, strings) are required")
    if message.get("content-type") != "application/json":
        return f"not a Celery message: content-type must be application/json, not {message.get('content-type')!r:.60}"
    if props.get("body_encoding") != "base64":
        return "not a Celery message: properties.body_encoding must be base64"
    if not isinstance(headers.get("task"), str) or not isinstance(headers.get("id"), str) or not headers["id"]:
        return "not a Celery message: headers.task and headers.id (strings) are required"
    if not _ours(headers["task"]):
        # Celery's built-ins (celery.chord_unlock, celery.chain...) are registered too; a message
        # naming one would run it with whatever arguments it carries.
        return f"unknown task name: {headers['task']!r:.100}"
    home = ROUTES.get(headers["task"])
    if home is not None and home != queue:
        # A task runs only from the queue it is routed to: the producers' queues (signups,
        # payments) take events, and the worker's own tasks come only from the worker's queues.
        return f"task {headers['task']!r} is not taken from queue {queue!r}; its queue is {home!r}"
    for name in ("eta", "expires"):
        if headers.get(name) is not None and not _is_time(headers[name]):
            return f"not a Celery message: headers.{name} must be null or an ISO 8601 time"
    retries = headers.get("retries", 0)
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool) or retries < 0):
        return "not a Celery message: headers.retries must be a whole number"
    limits = headers.get("timelimit")
    if limits is not None and not (isinstance(limits, list) and len(limits) == 2 and all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in limits)):
        return "not a Celery message: headers.timelimit must be null or [soft, hard]"
    # The event itself: refused above MAX_EVENT_BYTES (plus a little framing) before it is decoded.
    most = get_settings().max_event_bytes + 1024
    if len(body) * 3 // 4 > most:
        return f"oversized event: body of {len(body) * 3 // 4} bytes > {most}; not parsed"
    try:
        decoded = json.loads(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as exc:
        return f"message body cannot be decoded: {exc}"
    if not (isinstance(decoded, list) and len(decoded) == 3 and isinstance(decoded[0], list)
            and isinstance(decoded[1], dict) and (decoded[2] is None or isinstance(decoded[2], dict))):
        return "not a Celery message: the body must be [args, kwargs, embed]"
    # Celery runs an embed's callbacks, errbacks, chain and chord after (or instead of) the task,
    # with whatever arguments they carry: a producer could attach an unsigned adjustment to a
    # signup. Nothing of ours sends them, so any that is not empty is refused.
    attached = sorted(k for k, v in (decoded[2] or {}).items() if k in CANVAS and v)
    if attached:
        return f"the message's embed carries {', '.join(attached)}; tasks here take none"
    return None


CANVAS = frozenset({"callbacks", "errbacks", "chain", "chord", "group"})


def _ours(task: str) -> bool:
    return task in app.tasks and not task.startswith("celery.")


def _is_time(value: Any) -> bool:
    try:
        return isinstance(value, str) and parse_iso8601(value) is not None
    except (ValueError, TypeError, OverflowError):
        return False
