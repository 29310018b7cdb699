"""Operators' credit tools: manual adjustments, promo codes, expiring promotional credit.

- ledger_entries.kind gains `adjustment` (an operator's correction, either sign), `promo` (a
  redeemed code's credit) and `expiry` (the unspent part of a grant leaving at its expiry).
- ledger_entries.expires_at: set on a grant's first entry when that grant expires (the signup
  grant with SIGNUP_CREDIT_EXPIRES_DAYS, a code with --credit-expires-days); payments never do.
- promo_codes: one row per code, stored only as the SHA-256 of its canonical form; `uses`
  counts redemptions and is raised in the transaction that writes the promo entry, under a lock
  on the row, so concurrent redemptions can never pass `max_uses`.
- grant_burn(user, until): which grant each piece of spend burned, replayed in time order: spend
  burns the live grant that expires soonest, then the oldest, grants that never expire last; a
  grant is dead from its expiry on (expiries up to `until`). One definition for the expiry job
  (what is left of a grant when it expires) and for account_balances.savings_usd.

Revision ID: 0008
Revises: 0006
"""

from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

GRANT_BURN = """
CREATE FUNCTION grant_burn(p_user varchar, p_until timestamptz)
RETURNS TABLE (grant_key text, credit numeric, paid numeric, expires_at timestamptz,
               used numeric, expired_left numeric, remaining numeric)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    -- The account's grants in burn order (parallel arrays: a handful of grants per account).
    k text[] := '{}'; cr numeric[] := '{}'; pd numeric[] := '{}'; ex timestamptz[] := '{}';
    rem numeric[] := '{}'; us numeric[] := '{}'; lft numeric[] := '{}'; dead boolean[] := '{}';
    n int := 0;
    owed_usage numeric := 0;  -- spend no live grant has covered yet (the proxy can overshoot)
    owed_other numeric := 0;  -- credit taken back (a negative adjustment) not covered yet
    e record; i int; p int; take numeric; recorded numeric;
BEGIN
    FOR e IN
        WITH mine AS (
            SELECT l.id, l.kind, l.grant_key, l.credit_usd, l.paid_usd, l.spent_usd, l.occurred_at, l.expires_at
            FROM ledger_entries l WHERE l.user_id = p_user
        ),
        -- Moments the set of grants changes: a credit entry, a grant's expiry (first at an instant).
        marks AS (
            SELECT m.occurred_at AS at, 1 AS prio, m.id, m.kind, m.grant_key, m.credit_usd, m.paid_usd, m.expires_at
            FROM mine m WHERE m.kind NOT IN ('usage', 'expiry')
            UNION ALL
            SELECT m.expires_at, 0, m.id, 'expire', m.grant_key, 0, 0, NULL
            FROM mine m WHERE m.expires_at <= p_until
        ),
        -- Usage between two marks burns the same grants: summed, so the loop runs per mark.
        usage_rows AS (
            SELECT x.at, x.is_mark, x.spent,
                   sum(x.is_mark::int) OVER (ORDER BY x.at, x.is_mark DESC ROWS UNBOUNDED PRECEDING) AS seg
            FROM (SELECT mk.at, true AS is_mark, 0::numeric AS spent FROM marks mk
                  UNION ALL
                  SELECT m.occurred_at, false, m.spent_usd FROM mine m WHERE m.kind = 'usage') x
        )
        SELECT mk.at, mk.prio, mk.id, mk.kind, mk.grant_key, mk.credit_usd, mk.paid_usd, mk.expires_at,
               0::numeric AS spent
        FROM marks mk
        UNION ALL
        SELECT min(u.at), 2, NULL::bigint, 'usage', NULL, 0, 0, NULL, sum(u.spent)
        FROM usage_rows u WHERE NOT u.is_mark GROUP BY u.seg
        ORDER BY 1, 2, 3
    LOOP
        IF e.kind = 'expire' THEN
            i := array_position(k, e.grant_key);
            IF i IS NOT NULL AND NOT dead[i] THEN
                lft[i] := rem[i];
                recorded := NULL;
                SELECT -l.credit_usd INTO recorded FROM ledger_entries l
                WHERE l.idempotency_key = 'expiry:' || e.grant_key;
                -- Once written, the expiry entry is the fact; until then all that is left goes.
                rem[i] := rem[i] - coalesce(recorded, rem[i]);
                dead[i] := true;
                IF rem[i] < 0 THEN  -- spend filed after the expiry was written: it rests elsewhere
                    owed_usage := owed_usage - rem[i]; us[i] := us[i] + rem[i]; rem[i] := 0;
                END IF;
            END IF;
        ELSIF e.kind = 'usage' THEN
            owed_usage := owed_usage + e.spent;
        ELSIF e.grant_key IS NULL THEN
            IF e.credit_usd < 0 THEN owed_other := owed_other - e.credit_usd; END IF;
        ELSE
            i := array_position(k, e.grant_key);
            IF i IS NULL THEN
                -- A new grant, in burn order: soonest expiry first, then arrival; never-expiring last.
                p := 1;
                WHILE p <= n AND (e.expires_at IS NULL OR (ex[p] IS NOT NULL AND ex[p] <= e.expires_at)) LOOP
                    p := p + 1;
                END LOOP;
                k := k[1:p - 1] || e.grant_key::text || k[p:n];
                cr := cr[1:p - 1] || e.credit_usd || cr[p:n];
                pd := pd[1:p - 1] || e.paid_usd || pd[p:n];
                ex := ex[1:p - 1] || e.expires_at::timestamptz || ex[p:n];
                rem := rem[1:p - 1] || e.credit_usd || rem[p:n];
                us := us[1:p - 1] || 0::numeric || us[p:n];
                lft := lft[1:p - 1] || NULL::numeric || lft[p:n];
                dead := dead[1:p - 1] || false || dead[p:n];
                n := n + 1;
            ELSE
                cr[i] := cr[i] + e.credit_usd; pd[i] := pd[i] + e.paid_usd; rem[i] := rem[i] + e.credit_usd;
                IF rem[i] < 0 THEN  -- a refund of credit already spent: that spend rests elsewhere now
                    take := least(-rem[i], us[i]);
                    us[i] := us[i] - take; owed_usage := owed_usage + take;
                    owed_other := owed_other - rem[i] - take; rem[i] := 0;
                END IF;
            END IF;
        END IF;
        IF owed_usage > 0 OR owed_other > 0 THEN
            FOR i IN 1..n LOOP
                CONTINUE WHEN dead[i] OR rem[i] <= 0;
                take := least(rem[i], owed_usage); rem[i] := rem[i] - take; us[i] := us[i] + take;
                owed_usage := owed_usage - take;
                take := least(rem[i], owed_other); rem[i] := rem[i] - take; owed_other := owed_other - take;
                EXIT WHEN owed_usage = 0 AND owed_other = 0;
            END LOOP;
        END IF;
    END LOOP;
    RETURN QUERY SELECT * FROM unnest(k, cr, pd, ex, us, lft, rem);
END $$
"""

# As in 0005, with savings from grant_burn: the consumed part of a grant saved (1 - paid/credit).
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
CROSS JOIN LATERAL (
    SELECT coalesce(sum(CASE WHEN b.credit > 0 THEN b.used * (1 - b.paid / b.credit) END), 0)::numeric(20, 10)
           AS savings
    FROM grant_burn(a.user_id, now()) b
) s
"""


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
        ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
            CHECK (kind IN ('grant', 'payment', 'refund', 'usage', 'adjustment', 'promo', 'expiry'));
        ALTER TABLE ledger_entries ADD COLUMN expires_at timestamptz;
        -- The expiry job's search: grants that expire, by when.
        CREATE INDEX ledger_entries_expiring_idx ON ledger_entries (expires_at) WHERE expires_at IS NOT NULL;
        CREATE TABLE promo_codes (
            id bigserial PRIMARY KEY,
            code_hash varchar(64) NOT NULL UNIQUE,
            -- What an operator recognises a code by in `codes list`: its prefix and last characters.
            hint text NOT NULL,
            amount_usd numeric(20, 10) NOT NULL CHECK (amount_usd > 0),
            max_uses integer CHECK (max_uses > 0),
            uses integer NOT NULL DEFAULT 0 CHECK (uses >= 0 AND (max_uses IS NULL OR uses <= max_uses)),
            expires_at timestamptz,
            -- The credit a redemption gives expires this many days after it.
            credit_expires_days integer CHECK (credit_expires_days > 0),
            created_at timestamptz NOT NULL DEFAULT now()
        );
        """
    )
    op.execute(GRANT_BURN)
    op.execute(BALANCES_VIEW)


def downgrade() -> None:
    from importlib import import_module

    op.execute(import_module("migrations.versions.0005_account_credits").BALANCES_VIEW)
    op.execute(
        """
        DROP FUNCTION grant_burn(varchar, timestamptz);
        DROP TABLE promo_codes;
        DROP INDEX ledger_entries_expiring_idx;
        ALTER TABLE ledger_entries DROP COLUMN expires_at;
        ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
        ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
            CHECK (kind IN ('grant', 'payment', 'refund', 'usage'));
        """
    )
