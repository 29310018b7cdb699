"""The one place task policy lives: late acks, no results, stable names, retries, dead letters.

A task states its name and the service call; everything else is shared. Rejected input
is dead-lettered at once; transient faults retry with capped exponential backoff and jitter;
anything left after the last retry, or any bug, is dead-lettered with the reason. Nothing is
dropped, and nothing is retried into a hot loop.
"""

from __future__ import annotations

import functools
import logging
import random
import traceback
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Retry
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError

from schemas.events import describe
from worker.app import app
from worker.delivery import dead_letters
from worker.errors import NotYet, Rejected
from worker.logs import bind
from worker.producer import shown
from worker.proxy import TransientProxyError
from worker.settings import get_settings

log = logging.getLogger(__name__)
TRANSIENT = (TransientProxyError, OperationalError, NotYet)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def backoff(retries: int) -> float:
    """Capped exponential with full jitter, far below the broker's visibility timeout."""
    cap = min(get_settings().retry_backoff_max_s, get_settings().broker_visibility_timeout_s // 4)
    ceiling = min(cap, 2 ** min(retries, 20))
    return random.uniform(ceiling / 2, ceiling)


class CreditTask(Task):
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    max_retries = None  # we count ourselves, so exhaustion dead-letters instead of failing


def settle(name: str, payload: Any, exc: Exception, retries: int, retry: Callable[[Exception, float], None]) -> None:
    """The policy for one message whose work raised `exc`: dead-letter it, or have `retry` send it
    again after a backoff. Raises if neither could be done, so the message stays in flight."""
    try:
        if isinstance(exc, (Rejected, ValidationError)):
            dead_letters.store(name, payload, describe(exc), attempts=retries + 1)
            return
        if not is_transient(exc):
            log.error("task failed unexpectedly", exc_info=exc)
            dead_letters.store(
                name, payload, f"unexpected error: {type(exc).__name__}: {exc}"[:500],
                error="".join(traceback.format_exception(exc)), attempts=retries + 1,
            )
            return
    except Exception as failure:
        if not is_transient(failure):
            raise
        exc = failure
    if retries >= get_settings().task_max_retries:
        try:
            dead_letters.store(
                name, payload, f"gave up after {retries + 1} attempts: {exc}"[:500],
                error=str(exc), attempts=retries + 1,
            )
            return
        except Exception:  # the database itself is down: keep the message in flight
            log.warning("could not dead-letter; retrying later", exc_info=True)
    countdown = backoff(retries)
    log.warning("transient failure, retry %d in %.1fs: %s", retries + 1, countdown, exc)
    retry(exc, countdown)


def run_guarded(task: Task, name: str, payload: Any, body: Callable[[], None]) -> None:
    retries = task.request.retries or 0

    def retry(exc: Exception, countdown: float) -> None:
        # Celery's retry rebuilds the message without its kwargsrepr: the event's, masked again,
        # or Flower and the unacked hash would show the full signature.
        kwargs = task.request.kwargs or {}
        shown_as = {"kwargsrepr": shown(kwargs["event"])} if "event" in kwargs else {}
        raise task.retry(exc=exc, countdown=countdown, max_retries=None, **shown_as) from None

    try:
        body()
    except Retry:
        raise
    except Exception as exc:
        settle(name, payload, exc, retries, retry)


def as_received(args: tuple[Any, ...] | list[Any], extra: dict[str, Any], event: Any) -> Any:
    """What a dead letter keeps of a message: its event, or all its arguments when it has none."""
    return event if event is not None else {"args": list(args), **extra}


def the_event(args: tuple[Any, ...], extra: dict[str, Any], event: Any) -> dict[str, Any]:
    """The one `event` keyword argument a wire task takes, or Rejected."""
    if args or extra:
        raise Rejected(f"the task takes exactly one keyword argument, event; got "
                       f"{len(args)} positional and {sorted(extra)}")
    if not isinstance(event, dict):
        raise Rejected(f"event: must be a JSON object, got {type(event).__name__}")
    return event


def event_task(name: str) -> Callable[[Callable[[dict[str, Any]], None]], Task]:
    """Register `fn(event)` as the task `name` taking exactly one keyword argument, `event`.

    Its queue comes from worker.app.ROUTES, which producers use too."""

    def decorate(fn: Callable[[dict[str, Any]], None]) -> Task:
        @app.task(bind=True, base=CreditTask, name=name)
        @functools.wraps(fn)
        def run(self: Task, *args: Any, event: Any = None, **extra: Any) -> None:
            with bind(task_id=self.request.id, kind=name):
                def body() -> None:
                    fn(the_event(args, extra, event))

                run_guarded(self, name, as_received(args, extra, event), body)

        return run

    return decorate


def beat_task(name: str) -> Callable[[Callable[[], Any]], Task]:
    """A periodic job: same policy; it locks itself in the database if it must run alone."""

    def decorate(fn: Callable[[], Any]) -> Task:
        @app.task(bind=True, base=CreditTask, name=name)
        @functools.wraps(fn)
        def run(self: Task) -> None:
            with bind(task_id=self.request.id, kind=name):
                run_guarded(self, name, {}, fn)

        return run

    return decorate
