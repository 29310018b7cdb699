"""Payment events applied a batch at a time: one ledger transaction, then one round of pushes.

What a batch costs grows with its number of accounts, not of payments: a few statements for the
ledger, one lock and one sum over the accounts, and one /key/bulk_update for every key whose
budget changed, so many payments queued for one account make one push of its final total.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.events import PaymentEvent
from worker import signing
from worker.alerts.checks import check_alerts, credit_may_rearm
from worker.credits.accounts import sync_keys
from worker.credits.payments import apply_payments
from worker.db import session_scope


def apply_payment_batch(raw_events: Sequence[dict[str, Any]]) -> list[Exception | None]:
    """Credit each payment once and make each key's max_budget the ledger's total.

    Returns, per event, None when it is done, or the exception that stopped it: a Rejected or
    ValidationError (bad input), or whatever a transient fault raised for the events it touched.
    Ledger entries commit before any push, so a failed push never loses a payment's credit:
    the retry finds the entry, writes nothing, and pushes again.
    """
    outcomes, parsed = signing.parse_signed(raw_events, PaymentEvent, signing.check)
    if not parsed:
        return outcomes
    try:
        with session_scope() as session:
            refused = apply_payments(session, list(parsed.values()))
            applied = {i: e for (i, e), no in zip(parsed.items(), refused, strict=True) if no is None}
            rearm = credit_may_rearm(session, [e.user_id for e in applied.values()])
    except Exception as exc:  # the whole transaction rolled back: every event retries or fails
        for i in parsed:
            outcomes[i] = exc
        return outcomes
    for i, no in zip(parsed, refused, strict=True):
        outcomes[i] = no
    users = {e.user_id for e in applied.values()}
    try:
        # A payment before its signup makes no key: the signup makes it, once, at the full total.
        _, failed = sync_keys(users, provision_unsigned=False)
    except Exception as exc:
        failed = dict.fromkeys(users, exc)
    if rearm:
        try:
            check_alerts(rearm)
        except Exception as exc:  # the credit is in; a retry finds the thresholds still disarmed
            failed.update({u: exc for u in rearm if u not in failed})
    for i, event in applied.items():
        outcomes[i] = failed.get(event.user_id)
    return outcomes
