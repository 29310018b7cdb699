"""Credits by account without walking its usage: every payment's budget push sums them.

An account's usage entries grow with every request it makes; its credits (grants, payments,
refunds) stay a handful. Summing credits through this index costs the same at a million usage
entries as at none. Also joins the two branches (spend, alerts) into one head.

Revision ID: 0004
Revises: 0002, 0003
"""

from alembic import op

revision = "0004"
down_revision = ("0002", "0003")
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ledger_entries_credits_idx ON ledger_entries (user_id) INCLUDE (credit_usd) "
        "WHERE kind <> 'usage'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ledger_entries_credits_idx")
