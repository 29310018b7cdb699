"""Accounts, the append-only ledger, dead letters and the account_balances view.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BALANCES_VIEW = """
CREATE VIEW account_balances AS
SELECT a.user_id, a.key_alias, a.key_status,
       t.credited AS credited_usd, t.paid AS paid_usd, t.spent AS spent_usd,
       t.credited - t.spent AS remaining_usd,
       s.savings AS savings_usd,
       a.budget_pushed_usd, a.budget_pushed_at, t.last_spend_at
FROM accounts a
CROSS JOIN LATERAL (
    SELECT coalesce(sum(l.credit_usd), 0)::numeric(20, 10) AS credited,
           coalesce(sum(l.paid_usd), 0)::numeric(20, 10) AS paid,
           coalesce(sum(l.spent_usd), 0)::numeric(20, 10) AS spent,
           max(l.occurred_at) FILTER (WHERE l.kind = 'usage') AS last_spend_at
    FROM ledger_entries l WHERE l.user_id = a.user_id
) t
-- Savings: spend burns grants oldest first; the consumed part of a grant saved (1 - paid/credit).
CROSS JOIN LATERAL (
    SELECT coalesce(sum(CASE WHEN b.credit > 0 THEN b.consumed * (1 - b.paid / b.credit) END),
                    0)::numeric(20, 10) AS savings
    FROM (
        SELECT g.credit, g.paid,
               least(greatest(t.spent - (sum(g.credit) OVER (ORDER BY g.first_id) - g.credit), 0),
                     g.credit) AS consumed
        FROM (
            SELECT sum(l.credit_usd) AS credit, sum(l.paid_usd) AS paid, min(l.id) AS first_id
            FROM ledger_entries l
            WHERE l.user_id = a.user_id AND l.grant_key IS NOT NULL
            GROUP BY l.grant_key
        ) g
    ) b
) s
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE accounts (
            user_id varchar(128) PRIMARY KEY,
            email text,
            key_alias text NOT NULL UNIQUE,
            key_hash varchar(64) NOT NULL UNIQUE,
            key_encrypted text NOT NULL,
            key_status varchar(16) NOT NULL DEFAULT 'pending'
                CHECK (key_status IN ('pending', 'active', 'failed')),
            budget_pushed_usd numeric(20, 10),
            budget_pushed_at timestamptz,
            push_error text,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE ledger_entries (
            id bigserial PRIMARY KEY,
            user_id varchar(128) NOT NULL REFERENCES accounts (user_id),
            kind varchar(16) NOT NULL CHECK (kind IN ('grant', 'payment', 'refund', 'usage')),
            idempotency_key text NOT NULL UNIQUE,
            grant_key text,
            credit_usd numeric(20, 10) NOT NULL DEFAULT 0,
            paid_usd numeric(20, 10) NOT NULL DEFAULT 0,
            spent_usd numeric(20, 10) NOT NULL DEFAULT 0,
            occurred_at timestamptz NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            details jsonb
        );
        CREATE INDEX ledger_entries_user_idx ON ledger_entries (user_id, id);
        CREATE INDEX ledger_entries_grant_idx ON ledger_entries (grant_key) WHERE grant_key IS NOT NULL;
        CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger_entries is append-only: % refused', TG_OP;
        END $$;
        CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
            FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();
        CREATE TABLE dead_letters (
            id bigserial PRIMARY KEY,
            task_name text NOT NULL,
            payload text NOT NULL,
            reason text NOT NULL,
            error text NOT NULL,
            attempts integer NOT NULL DEFAULT 1,
            status varchar(16) NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'replayed', 'discarded')),
            first_failed_at timestamptz NOT NULL DEFAULT now(),
            last_failed_at timestamptz NOT NULL DEFAULT now(),
            resolved_at timestamptz
        );
        CREATE INDEX dead_letters_open_idx ON dead_letters (id) WHERE status = 'open';
        """
    )
    op.execute(BALANCES_VIEW)


def downgrade() -> None:
    op.execute(
        "DROP VIEW account_balances; DROP TABLE dead_letters; DROP TABLE ledger_entries; "
        "DROP FUNCTION ledger_entries_append_only(); DROP TABLE accounts;"
    )
