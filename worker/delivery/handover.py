"""Main process: a batched task's runnable messages go to the pool together (see worker.delivery.batching).

Celery's strategy receives each message (events, logs, ETA) and hands it here instead of to the
pool. While a batch runs, what arrives waits; when it returns, the waiting messages go as the
next batch. Each message is then settled as Celery would settle it: acked and reported as
succeeded, given back when the pool process asks or dies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from time import monotonic
from typing import Any

from celery.app import trace
from celery.worker import state

from worker.app import app
from worker.logs import bind

log = logging.getLogger(__name__)
Item = tuple[str, list[Any], dict[str, Any], int]  # task id, args, kwargs, retries so far


class Handing:
    """The consumer as Celery's strategy sees it, except that runnable requests go to `hand`."""

    def __init__(self, consumer: Any, hand: Callable[[Any], None]):
        self._consumer, self.on_task_request = consumer, hand

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


class Batcher:
    """Main process: one batch in the pool per pool process, the rest waiting for the next."""

    def __init__(self, task: Any, pool: Any, size: int):
        self.task, self.pool, self.size = task, pool, size
        self.slots = max(1, int(getattr(pool, "limit", 1) or 1))
        self.waiting: list[Any] = []
        self.running = 0

    def add(self, request: Any) -> None:
        self.waiting.append(request)
        if self.running < self.slots or len(self.waiting) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.waiting or state.should_stop or state.should_terminate:
            return  # on shutdown, what never reached the pool goes back to the queue unacked
        batch, self.waiting = self.waiting[:self.size], self.waiting[self.size:]
        items = [(r.id, list(r.args), r.kwargs, r.request_dict.get("retries") or 0) for r in batch]
        started = monotonic()

        def accepted(pid: int, time_accepted: float) -> None:
            for request in batch:
                request.on_accepted(pid, time_accepted)

        def returned(give_back: list[str] | None) -> None:
            self.running -= 1
            back = set(give_back or ())
            with _acks_together(batch):
                self._settle(batch, back, monotonic() - started)
            self.flush()

        def lost(exc_info: Any) -> None:  # the pool process died: Celery gives each message back
            self.running -= 1
            for request in batch:
                request.on_failure(exc_info)
            self.flush()

        self.running += 1
        try:
            self.pool.apply_async(run_batch, args=(self.task.name, items), accept_callback=accepted,
                                  callback=returned, error_callback=lost)
        except Exception:  # the pool is closing: the messages stay unacked and go back
            self.running -= 1
            log.warning("could not hand %d messages to the pool", len(batch), exc_info=True)

    def _settle(self, batch: list[Any], back: set[str], runtime: float) -> None:
        for request in batch:
            if request.id in back:
                state.task_ready(request)
                request.reject(requeue=True)
            else:
                request.on_success((False, None, runtime))
                # Celery's own line for a task that succeeded, which operators grep for.
                context = {"id": request.id, "name": request.name, "return_value": None, "runtime": runtime}
                with bind(**type(self.task).about(request.kwargs.get("event"))):
                    trace.logger.info(trace.LOG_SUCCESS, context, extra={"data": context})


def _acks_together(batch: list[Any]) -> Any:
    """One Redis round trip for the batch's acks, where the transport can (worker.delivery.broker)."""
    qos = getattr(getattr(batch[0].message, "channel", None), "qos", None)
    return qos.acks_together() if hasattr(qos, "acks_together") else nullcontext()


def run_batch(name: str, items: list[Item]) -> list[str]:
    """The pool process's job: the task's run_batch (worker.delivery.batching) on these messages."""
    return app.tasks[name].run_batch(items)
