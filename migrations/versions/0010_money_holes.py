"""Expiry corrections for late spend, and grant_burn readable through the views by any role.

- A grant's expiry is settled once the spend cursor passes it; a usage row dated before the
  expiry can still arrive later (a long streaming call, the proxy's batch write, a window's
  verification, reconcile's repair). That row burns the expired grant, so the expiry took too
  much: worker/credits/expiry.py then appends a correction, an `expiry` entry of the grant that
  gives the difference back. grant_burn therefore reads what left a grant as the sum of all its
  `expiry` entries, not the first one alone.
- expiry_cursor: how far the expiry job has got (grants settled, entries looked at for late
  spend), so that a run costs what is new since the last one.
- grant_burn runs as its owner (SECURITY DEFINER, with a fixed search_path): account_balances
  calls it, and a role granted only the views (the web app's, as docs/dashboard.md writes it)
  could not read account_usage_segments and ledger_entries under it.

Revision ID: 0010
Revises: 0009
"""

from importlib import import_module

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_FIRST_ENTRY = """SELECT -l.credit_usd INTO recorded FROM ledger_entries l
                WHERE l.idempotency_key = 'expiry:' || e.grant_key;"""
_ALL_ENTRIES = """SELECT -sum(l.credit_usd) INTO recorded FROM ledger_entries l
                WHERE l.grant_key = e.grant_key AND l.kind = 'expiry' AND l.user_id = p_user;"""


def _grant_burn(recorded: str) -> str:
    segmented = import_module("migrations.versions.0009_account_totals")._segment_grant_burn()
    assert _FIRST_ENTRY in segmented, "0009's grant_burn changed: update 0010"
    return segmented.replace(_FIRST_ENTRY, recorded)


def upgrade() -> None:
    op.execute(_grant_burn(_ALL_ENTRIES))
    # CREATE OR REPLACE drops the function's settings: 0009's jit = off is set again.
    op.execute("ALTER FUNCTION grant_burn(varchar, timestamptz) SECURITY DEFINER SET search_path = public, pg_temp "
               "SET jit = off")
    op.execute(
        """
        CREATE TABLE expiry_cursor (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            settled_until timestamptz,  -- NULL: the first run looks at every grant
            grants_after_entry_id bigint NOT NULL DEFAULT 0,
            late_after_entry_id bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO expiry_cursor (late_after_entry_id) SELECT coalesce(max(id), 0) FROM ledger_entries;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE expiry_cursor")
    op.execute(_grant_burn(_FIRST_ENTRY))
    op.execute("ALTER FUNCTION grant_burn(varchar, timestamptz) SET jit = off")
