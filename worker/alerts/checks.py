"""Balance alerts: one event per threshold crossing, delivered by worker.alerts.stream.

A threshold fires when remaining credit falls to or below it, then stays quiet until a top-up
lifts the balance back above it. Whether to fire is decided under row locks in PostgreSQL, so
two workers checking one account at once fire it once; firing and re-arming commit with the
check, and delivery follows the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from worker.alerts.stream import deliver
from worker.db import session_scope
from worker.models import BalanceAlert
from worker.settings import get_settings

log = logging.getLogger(__name__)


def check_alerts(user_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Fire what crossed for these users, re-arm what recovered, then deliver anything pending.

    Call it once the change to the ledger has committed. Errors in the check propagate (the
    calling task retries, and the check is safe to repeat); delivery errors are only logged: the
    next call delivers what is left.
    """
    with session_scope() as session:
        fired = _evaluate(session, sorted(set(user_ids)))
        waiting = bool(fired) or _any_pending(session)
    # Most checks (every payment makes one) fire nothing and find nothing left undelivered: a
    # look at the partial index in the same transaction spares them deliver()'s own transaction.
    if waiting:
        deliver()
    return fired


def near_a_threshold(session: Session, user_ids: Iterable[str]) -> list[str]:
    """Of these users, those whose remaining credit is at or below one of their threshold levels:
    the only ones that new usage can make fire. Usage only lowers a balance, and credit re-arms
    through credit_may_rearm, so a spend window's check need not lock every account it touched."""
    thresholds = get_settings().alert_thresholds
    percents = [t.percent for t in thresholds if t.percent is not None]
    amounts = [t.usd or Decimal(0) for t in thresholds if t.percent is None]
    if not thresholds:
        return []
    return list(session.execute(
        # greatest() skips NULLs: a kind of threshold not configured does not count.
        text("SELECT user_id FROM account_totals WHERE user_id = ANY(:ids) AND credited_usd > 0 "
             "AND credited_usd - spent_usd <= greatest(credited_usd * CAST(:pct AS numeric) / 100, "
             "CAST(:usd AS numeric)) ORDER BY user_id"),
        {"ids": sorted(set(user_ids)), "pct": max(percents, default=None), "usd": max(amounts, default=None)},
    ).scalars())


def credit_may_rearm(session: Session, user_ids: Iterable[str]) -> list[str]:
    """Call in the transaction that adds credit: the users check_alerts must see after its commit.

    Credit only lifts the balance, so it can fire nothing; it can only re-arm a threshold that
    has fired. With every threshold's row present and armed there is nothing to do, and most
    payments skip the full check. The rows are locked: a check firing one concurrently commits
    first and is seen here, or waits for this transaction and reads the balance with its credit.
    """
    ids = sorted(set(user_ids))
    labels = [t.label for t in get_settings().alert_thresholds]
    rows = session.execute(
        select(BalanceAlert.user_id, BalanceAlert.armed)
        .where(BalanceAlert.user_id.in_(ids), BalanceAlert.threshold.in_(labels))
        .order_by(BalanceAlert.user_id, BalanceAlert.threshold).with_for_update()
    ).all()
    armed = {user_id: 0 for user_id in ids}
    for user_id, is_armed in rows:
        armed[user_id] += bool(is_armed)
    return [user_id for user_id, count in armed.items() if count < len(labels)]


def _any_pending(session: Session) -> bool:
    found = session.execute(text("SELECT EXISTS (SELECT 1 FROM balance_alerts WHERE pending IS NOT NULL)"))
    return bool(found.scalar())


def _evaluate(session: Session, ids: list[str]) -> list[dict[str, Any]]:
    levels = {t.label: t for t in get_settings().alert_thresholds}
    if not ids or not levels:
        return []
    # Create missing rows first, so even a never-checked account has rows to lock.
    session.execute(
        text("INSERT INTO balance_alerts (user_id, threshold) SELECT a.user_id, t FROM accounts a "
             "CROSS JOIN unnest(CAST(:labels AS text[])) t WHERE a.user_id = ANY(:ids) "
             "ORDER BY 1, 2 ON CONFLICT DO NOTHING"),  # one lock order for every checker: no deadlock
        {"labels": list(levels), "ids": ids},
    )
    states = session.execute(
        select(BalanceAlert).where(BalanceAlert.user_id.in_(ids), BalanceAlert.threshold.in_(list(levels)))
        .order_by(BalanceAlert.user_id, BalanceAlert.threshold).with_for_update()
    ).scalars().all()
    # Read after locking: a concurrent check that just fired has committed, and we see its balance too.
    balances = {row.user_id: row for row in session.execute(
        # The two figures account_balances gives, from the running totals (one row per account).
        text("SELECT a.user_id, coalesce(t.credited_usd, 0) AS credited_usd, "
             "(coalesce(t.credited_usd, 0) - coalesce(t.spent_usd, 0))::numeric(20, 10) AS remaining_usd "
             "FROM accounts a LEFT JOIN account_totals t USING (user_id) WHERE a.user_id = ANY(:ids)"),
        {"ids": ids},
    )}
    now, fired = datetime.now(UTC), []
    for state in states:
        credited, remaining = balances[state.user_id].credited_usd, balances[state.user_id].remaining_usd
        level = levels[state.threshold].level(credited)
        if state.armed and credited > 0 and remaining <= level:
            state.armed, state.fired_count = False, state.fired_count + 1
            state.last_fired_at, state.last_remaining_usd = now, remaining
            # Amounts in fixed point: str() would write a NUMERIC zero as "0E-10".
            state.pending = {
                "alert_id": f"{state.user_id}:{state.threshold}:{state.fired_count}",
                "user_id": state.user_id, "threshold": state.threshold, "level_usd": format(level, "f"),
                "remaining_usd": format(remaining, "f"), "credited_usd": format(credited, "f"),
                "at": now.isoformat(),
            }
            fired.append(state.pending)
            log.info("balance alert fired", extra={"user_id": state.user_id, "threshold": state.threshold,
                                                   "remaining_usd": format(remaining, "f")})
        elif not state.armed and remaining > level:
            state.armed = True
    return fired
