"""Operators' credit tools: manual adjustments and promo codes.

- ledger_entries.kind gains `adjustment` (an operator's correction, either sign) and `promo`
  (a redeemed code's credit).
- promo_codes: one row per code, stored only as the SHA-256 of its canonical form; `uses`
  counts redemptions and is raised in the transaction that writes the promo entry, under a lock
  on the row, so concurrent redemptions can never pass `max_uses`.

Revision ID: 0008
Revises: 0006
"""

from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
        ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
            CHECK (kind IN ('grant', 'payment', 'refund', 'usage', 'adjustment', 'promo'));
        CREATE TABLE promo_codes (
            id bigserial PRIMARY KEY,
            code_hash varchar(64) NOT NULL UNIQUE,
            -- What an operator recognises a code by in `codes list`: its prefix and last characters.
            hint text NOT NULL,
            amount_usd numeric(20, 10) NOT NULL CHECK (amount_usd > 0),
            max_uses integer CHECK (max_uses > 0),
            uses integer NOT NULL DEFAULT 0 CHECK (uses >= 0 AND (max_uses IS NULL OR uses <= max_uses)),
            expires_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE promo_codes;
        ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
        ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
            CHECK (kind IN ('grant', 'payment', 'refund', 'usage'));
        """
    )
