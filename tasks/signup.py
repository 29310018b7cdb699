"""`events.signup` on queue `signups`: an account, its starting grant, then its key on the proxy.

Signups run in batches (worker.delivery.batching), like payments: the worker hands the ones
waiting to the pool together, and their keys are made several at a time.
"""

from typing import Any

from schemas.events import signup_key
from worker.credits.signup import apply_signup_batch
from worker.delivery.batching import batch_event_task


def _about(event: Any) -> dict[str, Any]:
    """Log context of a signup, read from its raw fields: it must not fail on a bad event."""
    if not isinstance(event, dict):
        return {}
    return {"user_id": event.get("user_id"), "idempotency_key": signup_key(event.get("user_id"))}


signup = batch_event_task("events.signup", about=_about)(apply_signup_batch)
