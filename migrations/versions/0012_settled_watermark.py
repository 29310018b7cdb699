"""Reconcile's watermark settles: an idle pass stops re-reading the last minute's keys.

- reconcile_state.moved_at: our clock when the watermark last moved.
- reconcile_state.settled: a pass that started at least key_changes.SLACK after moved_at has read
  the keys written within SLACK before the watermark, so every write committed out of order has
  been seen; until the watermark moves again, passes read only keys written after it.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE reconcile_state ADD COLUMN moved_at timestamptz, "
               "ADD COLUMN settled boolean NOT NULL DEFAULT false")
    # A watermark saved before this moved at an unknown time: count from now.
    op.execute("UPDATE reconcile_state SET moved_at = now()")


def downgrade() -> None:
    op.execute("ALTER TABLE reconcile_state DROP COLUMN moved_at, DROP COLUMN settled")
