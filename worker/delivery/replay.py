"""An operator's answer to a dead letter: replay its event once the cause is fixed, or discard it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from schemas.routes import ROUTES
from worker.db import session_scope
from worker.models import DeadLetter
from worker.producer import enqueue

# Letters that hold no event (a spend-log row set aside, say): the package that wrote them
# registers how to apply one again (`handles`), so delivery knows no package above it.
Handler = Callable[[Session, DeadLetter], None]
_handlers: dict[str, Handler] = {}


def handles(task_name: str) -> Callable[[Handler], Handler]:
    """Register `fn(session, letter)` as the replay of letters of `task_name`; it raises
    ValueError, changing nothing, when the letter still cannot be applied."""
    def register(fn: Handler) -> Handler:
        _handlers[task_name] = fn
        return fn

    return register


def replay(letter_id: int) -> str:
    """Re-enqueue the stored event under its task name, or apply the letter by its registered
    handler; returns the task name."""
    with session_scope() as session:
        letter = session.get(DeadLetter, letter_id, with_for_update=True)
        if letter is None:
            raise LookupError(f"no dead letter {letter_id}")
        if letter.status != "open":
            raise ValueError(f"dead letter {letter_id} is already {letter.status}")
        handler = _handlers.get(letter.task_name)
        if handler is not None:
            handler(session, letter)  # in this transaction, with the letter marked replayed
            letter.status, letter.resolved_at = "replayed", datetime.now(UTC)
            return letter.task_name
        if not letter.task_name.startswith("events.") or letter.task_name not in ROUTES:
            raise ValueError(f"dead letter {letter_id} has no replayable task ({letter.task_name})")
        try:
            event = json.loads(letter.payload)
        except ValueError:
            raise ValueError(f"dead letter {letter_id} holds no JSON event; it cannot be replayed") from None
        letter.status = "replayed"
        letter.resolved_at = datetime.now(UTC)
        # Sent before the commit: a crash in between may send it twice, which the ledger absorbs,
        # whereas the other order could mark it replayed and send nothing.
        enqueue(letter.task_name, event)
        return letter.task_name


def discard(letter_id: int) -> None:
    with session_scope() as session:
        letter = session.get(DeadLetter, letter_id, with_for_update=True)
        if letter is None:
            raise LookupError(f"no dead letter {letter_id}")
        letter.status = "discarded"
        letter.resolved_at = datetime.now(UTC)
