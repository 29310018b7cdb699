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
    watermark: datetime | None  # the newest write seen, less SLACK
    full_at: datetime | None
    settled: bool = False  # the writes within SLACK before the newest have all been read

    def full_due(self, now: datetime) -> bool:
        return self.full_at is None or now - self.full_at >= timedelta(seconds=get_settings().reconcile_full_s)

    @property
    def since(self) -> datetime:
        """Keys written after this are read. Without the settling, an idle proxy would have every
        key written in the last minute of its activity read again at every pass."""
        if self.watermark is None:
            return EPOCH
        return self.watermark + SLACK if self.settled else self.watermark


def load(session: Session) -> State:
    row = session.execute(text("SELECT watermark, full_at, settled FROM reconcile_state")).one_or_none()
    return State(*row) if row else State(None, None)


def save(session: Session, newest: datetime | None, full_started: datetime | None, started: datetime) -> None:
    """After a pass that finished (`started` by our clock): the watermark never moves back. When
    it moves, its moved_at is now and it is not settled; when it stays, a pass that started SLACK
    or more after it moved read every write committed out of order, and settles it."""
    session.execute(
        text("INSERT INTO reconcile_state AS r (id, watermark, full_at, moved_at) "
             "VALUES (true, :w, :f, now()) "
             "ON CONFLICT (id) DO UPDATE SET "
             "watermark = greatest(r.watermark, excluded.watermark), "
             "full_at = coalesce(excluded.full_at, r.full_at), "
             "moved_at = CASE WHEN excluded.watermark > r.watermark OR r.watermark IS NULL THEN now() "
             "                ELSE r.moved_at END, "
             "settled = CASE WHEN excluded.watermark > r.watermark OR r.watermark IS NULL THEN false "
             "               ELSE r.settled OR CAST(:started AS timestamptz) >= "
             "                    coalesce(r.moved_at, '-infinity') + :slack END"),
        {"w": newest - SLACK if newest else None, "f": full_started, "started": started, "slack": SLACK},
    )
