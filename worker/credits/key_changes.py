"""Reconcile's watermark: the key changes compared already, and when every key last was.

Every write to a key on the proxy moves its updated_at (LiteLLM's column is Prisma's
@updatedAt, and its spend updates go through update_many), so a pass need read only the keys
written after the newest updated_at the last pass saw (the proxy's own clock: no skew between
hosts). A pass over every key still runs at most every RECONCILE_FULL_S, for what no write
shows (a key deleted on the proxy, an edit made straight in its database).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from worker.settings import get_settings

# Writes committed out of updated_at order (a slow transaction) by up to this are still read.
SLACK = timedelta(minutes=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class State:
    watermark: datetime | None
    full_at: datetime | None

    def full_due(self, now: datetime) -> bool:
        return self.full_at is None or now - self.full_at >= timedelta(seconds=get_settings().reconcile_full_s)

    @property
    def since(self) -> datetime:
        return self.watermark or EPOCH


def load(session: Session) -> State:
    row = session.execute(text("SELECT watermark, full_at FROM reconcile_state")).one_or_none()
    return State(*row) if row else State(None, None)


def save(session: Session, newest: datetime | None, full_started: datetime | None) -> None:
    """After a pass that finished: the watermark never moves back."""
    session.execute(
        text("INSERT INTO reconcile_state (id, watermark, full_at) VALUES (true, :w, :f) "
             "ON CONFLICT (id) DO UPDATE SET watermark = greatest(reconcile_state.watermark, excluded.watermark), "
             "full_at = coalesce(excluded.full_at, reconcile_state.full_at)"),
        {"w": newest - SLACK if newest else None, "f": full_started},
    )
