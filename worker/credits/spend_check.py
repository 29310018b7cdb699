"""Key spend against the ledger's usage, for the keys whose figures differ.

Where the proxy counts less than the ledger (its counter set back by hand or by a budget reset),
or the key has a budget_duration (a reset to come), the key could spend credit the ledger has
used: the counter is set back to the ledger's usage and the duration cleared (`_restore`), each
such repair counted in the report and logged.

Where the proxy counts more than the ledger and the rows the sync has not reached yet (the
settle window) do not explain it, the rows were filed beyond the spend sync's verification
horizon: with fix=True the key's missing rows are read and debited (worker.spend.repair), and only
what is left is reported. Each key is checked on its own: one that fails is recorded and the
others are still checked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from worker import proxy
from worker.credits import ledger
from worker.credits.reconcile_report import Drift, Report
from worker.db import session_scope
from worker.money import PROXY_TOLERANCE
from worker.spend import runs as spend_runs
from worker.spend.repair import repair_key, unsynced_explains

log = logging.getLogger("worker.credits.reconcile")


@dataclass(frozen=True)
class SpendSeen:
    user_id: str
    key_hash: str
    created_at: datetime
    proxy_spend: Decimal
    spent: Decimal  # what the ledger held when the key was read
    budget_duration: str | None = None
    updated_at: datetime | None = None  # the key's last write on the proxy, when the listing gave it

    @property
    def differs(self) -> bool:
        return abs(self.proxy_spend - self.spent) > PROXY_TOLERANCE or self.budget_duration is not None


def check_spend(seen: list[SpendSeen], fix: bool, report: Report) -> None:
    for key in seen:
        if not key.differs:
            continue
        try:
            _check(key, fix, report)
        except Exception as exc:  # noqa: BLE001 - one key's fault is recorded; the others go on
            report.key_error(key.user_id, exc, "spend")


def _spent(user_id: str) -> Decimal:
    with session_scope() as session:
        return ledger.spent_totals(session, [user_id])[user_id]


def _check(key: SpendSeen, fix: bool, report: Report) -> None:
    with session_scope() as session:
        spent = ledger.spent_totals(session, [key.user_id])[key.user_id]  # in the session the check reads
        fell = key.budget_duration is not None or key.proxy_spend < spent - PROXY_TOLERANCE
        if not fell and (abs(key.proxy_spend - spent) <= PROXY_TOLERANCE or _written_past_cursor(session, key)
                         or unsynced_explains(session, key.key_hash, key.proxy_spend)):
            return
    if fell:
        _restore(key, fix, report)
        return
    if fix and key.proxy_spend > spent:
        if repair_key(key.user_id, key.key_hash, key.created_at, datetime.now(UTC)).debited:
            report.spend_repaired.append(key.user_id)
        spent = _spent(key.user_id)
        if abs(key.proxy_spend - spent) <= PROXY_TOLERANCE:
            return
    report.spend_mismatches.append(Drift(key.user_id, key.proxy_spend, spent))


def _written_past_cursor(session: Session, key: SpendSeen) -> bool:
    """The proxy counted spend on this key after the spend sync's cursor: its rows are still to be
    read, so a proxy total ahead of the ledger is expected. No spend-log request is made for it:
    every busy key would otherwise cost one on every pass. Rows that never arrive are found by the
    full pass (RECONCILE_FULL_S), when the key's last write is behind the cursor."""
    position = spend_runs.cursor(session)
    return key.updated_at is not None and position is not None and key.updated_at >= position.position


def _restore(key: SpendSeen, fix: bool, report: Report) -> None:
    """The key's spend counter fell below the ledger's usage (a hand edit, a budget reset) or a
    budget_duration will reset it: the key could spend credit the ledger has used. Read again at
    rest, then set the counter back to the ledger's usage and clear the duration. Never lower: a
    counter at or above the ledger's (spend still to be synced) is left as it is, and only the
    duration cleared."""
    info = proxy.key_info(key.key_hash).info
    spent = _spent(key.user_id)
    low = info.spend < spent - PROXY_TOLERANCE
    if info.budget_duration is None and not low:
        return  # a moment's difference, gone by now
    report.spend_restored.append(Drift(key.user_id, info.spend, spent))
    log.warning("spend counter below the ledger's usage%s: %s", " (set back)" if fix else "", key.user_id,
                extra={"user_id": key.user_id, "proxy": str(info.spend), "ledger": str(spent),
                       "budget_duration": info.budget_duration})
    if fix:
        proxy.restore_spend(key.key_hash, spent if low else None)
