"""Fired alerts kept by id, so the webhook task carries only the id of a row the worker wrote.

ops.alert_webhook used to carry the whole alert: anyone able to push onto a queue could make the
worker POST arbitrary JSON to ALERT_WEBHOOK_URL. Its message is now {"fired_alert_id": N}; the
payload comes from this table, so a forged message can at most re-send an alert that fired.
A webhook message still queued in the old form when this runs is dead-lettered (its alert is on
the stream `credits.alerts` all the same).

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE fired_alerts (
            id bigserial PRIMARY KEY,
            -- <user_id>:<threshold>:<fired_count>, the alert's id on the stream and to the webhook.
            alert_id text NOT NULL UNIQUE,
            user_id varchar(128) NOT NULL REFERENCES accounts (user_id),
            payload jsonb NOT NULL,
            delivered_at timestamptz NOT NULL DEFAULT now(),
            -- Set once the webhook accepted it: a later message for the same row posts nothing.
            webhook_posted_at timestamptz
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE fired_alerts;")
