"""One definition of an account's credited total, the view account_credits, used by everything else.

The credited total is what a key's max_budget must be: every credit granted, less refunds. The
budget push, the alert check, the drift metric and account_balances all read it from here.
Usage entries carry no credit; leaving them out lets ledger_entries_credits_idx (0004) serve the
sum without walking an account's usage.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CREDITS_VIEW = """
CREATE VIEW account_credits AS
SELECT user_id, sum(credit_usd)::numeric(20, 10) AS credited_usd
FROM ledger_entries WHERE kind <> 'usage'
GROUP BY user_id
"""

BALANCES_VIEW = """
CREATE OR REPLACE VIEW account_balances AS
SELECT a.user_id, a.key_alias, a.key_status,
       coalesce(c.credited_usd, 0)::numeric(20, 10) AS credited_usd, t.paid AS paid_usd, t.spent AS spent_usd,
       coalesce(c.credited_usd, 0) - t.spent AS remaining_usd,
       s.savings AS savings_usd,
       a.budget_pushed_usd, a.budget_pushed_at, t.last_spend_at
FROM accounts a
LEFT JOIN account_credits c ON c.user_id = a.user_id
CROSS JOIN LATERAL (
    SELECT coalesce(sum(l.paid_usd), 0)::numeric(20, 10) AS paid,
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
    op.execute(CREDITS_VIEW)
    op.execute(BALANCES_VIEW)


def downgrade() -> None:
    from importlib import import_module

    first = import_module("migrations.versions.0001_ledger").BALANCES_VIEW
    op.execute(first.replace("CREATE VIEW", "CREATE OR REPLACE VIEW"))
    op.execute("DROP VIEW account_credits")
