"""`events.signup` on queue `signups`: an account, its starting grant, then its key on the proxy."""

from typing import Any

from schemas.events import SignupEvent
from worker import signing
from worker.credits.accounts import sync_key
from worker.credits.signup import apply_signup
from worker.db import session_scope
from worker.delivery.policy import event_task
from worker.logs import add_context


@event_task("events.signup")
def signup(event: dict[str, Any]) -> None:
    parsed = SignupEvent.model_validate(event)
    add_context(user_id=parsed.user_id, idempotency_key=parsed.idempotency_key)
    signing.check_signup(event)
    with session_scope() as session:
        apply_signup(session, parsed)
    # Only after the commit: the key's budget comes from what the ledger now holds.
    sync_key(parsed.user_id)
