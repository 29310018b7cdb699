"""Spend sync by windows: each window's read and verification state, rows set aside, daily usage.

- spend_windows: the proxy's spend logs cut into fixed windows. A window is read once, then only
  verified (the source's count against what is stored) and read again if they differ, so each
  row is fetched about once and a row filed late is still found.
- spend_rejected: rows that cannot or must not be debited (a poison row, an implausible spend),
  each with its dead letter; counted with the stored rows so their window still verifies.
- spend_daily: usage per account, UTC day and model, kept in the transaction that stores the
  rows, so daily_usage costs what the asked range holds, not the account's whole history.
  daily_usage gains failed_requests; requests counts successes only.
- The alert watermark goes: spend windows are read in parallel now, and each read checks the
  alerts of the accounts it covered.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE spend_windows (
            start_time timestamptz PRIMARY KEY,
            end_time timestamptz NOT NULL CHECK (end_time > start_time),
            -- How far the window has been read: rows from start_time to here are stored.
            read_to timestamptz NOT NULL,
            first_read_at timestamptz,
            verified_at timestamptz,
            source_count integer,
            stored_count integer,
            reads integer NOT NULL DEFAULT 0,
            -- Usage was stored in the window and its accounts' alerts are not checked yet.
            alerts_due boolean NOT NULL DEFAULT false,
            -- A reader's lease, renewed by each page it stores: another reader skips the window
            -- until it runs out; the same reader (a retry of its message) takes it back at once.
            claimed_until timestamptz,
            claimed_by text,
            enqueued_at timestamptz,
            CHECK (read_to >= start_time AND read_to <= end_time)
        );
        CREATE INDEX spend_windows_unread_idx ON spend_windows (start_time) WHERE read_to < end_time;
        CREATE TABLE spend_rejected (
            request_id text PRIMARY KEY,
            start_time timestamptz NOT NULL,
            reason text NOT NULL,
            dead_letter_id bigint REFERENCES dead_letters (id),
            rejected_at timestamptz NOT NULL DEFAULT now(),
            resolved_at timestamptz
        );
        CREATE INDEX spend_rejected_time_idx ON spend_rejected (start_time) WHERE resolved_at IS NULL;
        CREATE TABLE spend_daily (
            user_id varchar(128) NOT NULL REFERENCES accounts (user_id),
            day date NOT NULL,
            model text NOT NULL DEFAULT '',
            requests bigint NOT NULL DEFAULT 0,
            failed_requests bigint NOT NULL DEFAULT 0,
            prompt_tokens bigint NOT NULL DEFAULT 0,
            completion_tokens bigint NOT NULL DEFAULT 0,
            spend_usd numeric(20, 10) NOT NULL DEFAULT 0,
            PRIMARY KEY (user_id, day, model)
        );
        INSERT INTO spend_daily
        SELECT user_id, (start_time AT TIME ZONE 'UTC')::date, coalesce(model, ''),
               count(*) FILTER (WHERE status IS DISTINCT FROM 'failure'), count(*) FILTER (WHERE status = 'failure'),
               sum(prompt_tokens), sum(completion_tokens), sum(spend)
        FROM spend_logs WHERE user_id IS NOT NULL GROUP BY 1, 2, 3;
        DROP VIEW daily_usage;
        CREATE VIEW daily_usage AS
        SELECT user_id, day, nullif(model, '') AS model, requests, failed_requests, prompt_tokens,
               completion_tokens, spend_usd
        FROM spend_daily;
        DROP TABLE balance_alerts_watermark;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        CREATE TABLE balance_alerts_watermark (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            last_usage_id bigint NOT NULL
        );
        DROP VIEW daily_usage;
        CREATE VIEW daily_usage AS
        SELECT user_id, (start_time AT TIME ZONE 'UTC')::date AS day, model, count(*) AS requests,
               sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
               sum(spend)::numeric(20, 10) AS spend_usd
        FROM spend_logs WHERE user_id IS NOT NULL
        GROUP BY user_id, (start_time AT TIME ZONE 'UTC')::date, model;
        DROP TABLE spend_daily; DROP TABLE spend_rejected; DROP TABLE spend_windows;
        """
    )
