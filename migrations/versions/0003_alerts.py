"""Balance alerts: per account and threshold, whether it may fire and what it fired last; a usage watermark.

Revision ID: 0003
Revises: 0001
"""

from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE balance_alerts (
            user_id varchar(128) NOT NULL REFERENCES accounts (user_id),
            -- The threshold as configured in ALERT_THRESHOLDS: '20%' of credited, or USD such as '0'.
            threshold varchar(32) NOT NULL,
            -- False once fired; true again only when the balance is back above the threshold.
            armed boolean NOT NULL DEFAULT true,
            fired_count integer NOT NULL DEFAULT 0,
            last_fired_at timestamptz,
            last_remaining_usd numeric(20, 10),
            -- A fired alert not yet on the stream: kept here so a Redis outage delays it, never loses it.
            pending jsonb,
            PRIMARY KEY (user_id, threshold)
        );
        CREATE INDEX balance_alerts_pending_idx ON balance_alerts (user_id) WHERE pending IS NOT NULL;
        -- One row: the last usage ledger entry whose account has been checked. It moves in the same
        -- transaction as the check, so a spend sync that died before checking is caught up later.
        CREATE TABLE balance_alerts_watermark (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            last_usage_id bigint NOT NULL
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE balance_alerts_watermark; DROP TABLE balance_alerts;")
