"""Spend sync: stored spend-log rows, the sync cursor, run records and the daily_usage view.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE spend_logs (
            request_id text PRIMARY KEY,
            api_key varchar(128) NOT NULL,
            -- Set only when api_key is one of our accounts' key hashes; other keys' rows are kept for
            -- counting but never debited.
            user_id varchar(128) REFERENCES accounts (user_id),
            model text,
            spend numeric(20, 10) NOT NULL,
            prompt_tokens integer NOT NULL DEFAULT 0,
            completion_tokens integer NOT NULL DEFAULT 0,
            status varchar(32),
            start_time timestamptz NOT NULL,
            synced_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX spend_logs_user_time_idx ON spend_logs (user_id, start_time);
        -- Counting a window's stored rows against the proxy's count, before its cursor moves.
        CREATE INDEX spend_logs_time_idx ON spend_logs (start_time);
        -- One row (id is always true): where the next run continues, and where syncing began, so the
        -- look-back never reaches before the configured start.
        CREATE TABLE spend_sync_cursor (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            position timestamptz NOT NULL,
            origin timestamptz NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE spend_sync_runs (
            id bigserial PRIMARY KEY,
            started_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            window_start timestamptz,
            window_end timestamptz,
            pages integer NOT NULL DEFAULT 0,
            rows_seen bigint NOT NULL DEFAULT 0,
            inserted bigint NOT NULL DEFAULT 0,
            debited bigint NOT NULL DEFAULT 0,
            skipped bigint NOT NULL DEFAULT 0,
            duration_ms bigint,
            status varchar(16) NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'ok', 'error', 'abandoned')),
            error text
        );
        CREATE VIEW daily_usage AS
        SELECT user_id,
               (start_time AT TIME ZONE 'UTC')::date AS day,
               model,
               count(*) AS requests,
               sum(prompt_tokens) AS prompt_tokens,
               sum(completion_tokens) AS completion_tokens,
               sum(spend)::numeric(20, 10) AS spend_usd
        FROM spend_logs
        WHERE user_id IS NOT NULL
        GROUP BY user_id, (start_time AT TIME ZONE 'UTC')::date, model;
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP VIEW daily_usage; DROP TABLE spend_sync_runs; DROP TABLE spend_sync_cursor; DROP TABLE spend_logs;"
    )
