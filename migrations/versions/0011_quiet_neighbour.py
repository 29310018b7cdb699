"""A quiet neighbour (issue 23): reconcile's watermark.

- reconcile_state: one row. `watermark` is the proxy's updated_at up to which every key change
  has been compared; an incremental pass reads only keys written after it. `full_at` is when the
  last pass over every key started (a full pass runs at most every RECONCILE_FULL_S).

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE reconcile_state (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            watermark timestamptz,
            full_at timestamptz
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE reconcile_state")
