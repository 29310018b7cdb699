"""Batched wire tasks: the worker hands a task's waiting messages to the pool together.

Each message stays an ordinary Celery task message: it is received, reported to Flower, acked
after its work and given back if its process dies, one by one, exactly as Celery does for any
task. Only the hand-over differs (worker.delivery.handover): while a batch runs, messages that
arrive wait in the main process and go to the pool together when it returns (at most
EVENT_BATCH_SIZE at a time). Nothing waits for a timer, so a lone message starts at once. A
message with a countdown (a retry) and a call in-process (`task.apply`) run on their own,
through the same service function.

The service takes a list of events and returns, per event, the exception its work raised or
None; worker.delivery.policy.settle applies the usual policy to each, in the pool process.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from celery import Task
from celery.worker.strategy import default as default_strategy

from worker.app import app
from worker.delivery.handover import Batcher, Handing, Item
from worker.delivery.policy import CreditTask, as_received, run_guarded, settle, the_event
from worker.logs import add_context, bind
from worker.producer import shown
from worker.settings import get_settings

log = logging.getLogger(__name__)
Service = Callable[[Sequence[dict[str, Any]]], list[Exception | None]]
About = Callable[[Any], dict[str, Any]]  # what the logs say about an event: user id, idempotency key


class BatchedTask(CreditTask):
    service: Service
    about: About

    def start_strategy(self, app: Any, consumer: Any, **kwargs: Any) -> Any:
        batcher = Batcher(self, consumer.pool, get_settings().event_batch_size)
        return default_strategy(self, app, Handing(consumer, batcher.add), **kwargs)

    def run_batch(self, items: list[Item]) -> list[str]:
        """In the pool process: the service on every well-formed event, then the policy on each
        outcome. Returns the ids of the messages to give back to the queue (nothing could be done
        with them: neither dead-lettered nor sent again for a retry)."""
        events: list[dict[str, Any]] = []
        outcomes: list[Exception | None] = []
        for _, args, kwargs, _ in items:
            try:
                events.append(the_event(tuple(args), _extra(kwargs), kwargs.get("event")))
                outcomes.append(None)
            except Exception as exc:
                outcomes.append(exc)
        try:
            results = iter(type(self).service(events))
            outcomes = [outcome if outcome is not None else next(results) for outcome in outcomes]
        except Exception as exc:  # a bug: every event of the batch is dead-lettered with it
            outcomes = [outcome if outcome is not None else exc for outcome in outcomes]
        give_back = []
        for (task_id, args, kwargs, retries), outcome in zip(items, outcomes, strict=True):
            if outcome is None:
                continue
            payload = as_received(args, _extra(kwargs), kwargs.get("event"))
            with bind(task_id=task_id, kind=self.name, **type(self).about(payload)):
                try:
                    settle(self.name, payload, outcome, retries,
                           functools.partial(self._send_again, task_id, kwargs, retries))
                except Exception:
                    log.exception("could not settle a failed message; giving it back to the queue")
                    give_back.append(task_id)
        return give_back

    def _send_again(self, task_id: str, kwargs: dict[str, Any], retries: int, exc: Exception,
                    countdown: float) -> None:
        self.apply_async(kwargs=kwargs, task_id=task_id, retries=retries + 1, countdown=countdown,
                         kwargsrepr=shown(kwargs.get("event")))


def _extra(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k != "event"}


def batch_event_task(name: str, about: About) -> Callable[[Service], Task]:
    """Register `service(events)` as the wire task `name`, taking one `event` keyword argument
    per message and run in batches by the worker (see the module's docstring). `about(event)`
    gives the fields every log line about that event carries."""

    def decorate(service: Service) -> Task:
        @app.task(bind=True, base=BatchedTask, name=name, service=staticmethod(service), about=staticmethod(about))
        @functools.wraps(service)
        def run(self: Task, *args: Any, event: Any = None, **extra: Any) -> None:
            with bind(task_id=self.request.id, kind=name):
                def body() -> None:
                    add_context(**about(event))
                    outcome = service([the_event(args, extra, event)])[0]
                    if outcome is not None:
                        raise outcome

                run_guarded(self, name, as_received(args, extra, event), body)

        return run

    return decorate
