"""Running totals per account, kept by a trigger in the transaction of every ledger write.

A dashboard reads account_balances on every page view; summing the ledger there made a heavy
user's read cost grow with their whole history (515-605 ms at a million entries). Now:

- account_totals: per account, the sums account_balances showed (entries, credited, paid, spent,
  the latest usage). One row per account, read by primary key.
- account_grants: per account and grant (a signup grant, or a payment with its refunds), its
  credit and paid, and, in the order grants are consumed (oldest first, by first entry id), the
  credit of every grant before it (credit_before) and what consuming all of those saved
  (saved_before). The savings at any spend is then one row: the last grant whose credit_before is
  below the spend, found by account_grants_consumed_idx, plus its consumed part. Same arithmetic,
  same values, as the window over the ledger in 0005.
- ledger_entries_totals: an AFTER INSERT trigger, once per statement, over the statement's new
  rows (a transition table), so no writer can forget it: record(), record_many(), the spend
  ingest statement, a repair, a hand-written INSERT. Accounts are updated in user id order, one
  lock order for every writer. Usage entries never touch account_grants.
- account_balances and account_credits keep their names and columns and read the totals.
  worker/credits/audit.py recomputes them from the ledger and reports any difference.
- ledger_entries_history_idx (user_id, occurred_at, id) replaces ledger_entries_user_idx (user_id,
  id): the ledger history is paged newest first by (occurred_at, id), and every lookup by user
  the old index served, this one serves.
- audit_mismatches (accounts whose totals differed from the ledger when last audited) and
  audit_cursor (where the next bounded audit in reconcile starts).

- account_usage_segments: each account's usage summed between two of its grant events (a credit
  entry, or a grant's expiry), kept by the same trigger. A usage entry adds to the segment that
  holds its time, late or not; a new grant event splits the segment it falls in, moving to the
  new one the usage after it (bounded by how late the event is: none for a grant written now or
  an expiry ahead). grant_burn (0008, redefined here) replays those segments, so its cost is the
  account's grant events, not its usage.
- account_totals.replays: the account has held expiring credit, an adjustment or an expiry
  (0008). Which grant spend burns then depends on when each grant lived, so its savings_usd is
  the time-ordered replay of grant_burn (0008), a segment of usage at a time;
  every other account burns its grants oldest first, and the running table gives its savings in
  one row. Both are the one burn order of 0008: soonest expiry first, then the oldest.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The order grants are consumed in and what each saved, recomputed for the accounts given: used
# by the trigger after a credit entry, and by the migration's backfill.
GRANT_ORDER = """
UPDATE account_grants g SET credit_before = w.credit_before, saved_before = w.saved_before
FROM (
    SELECT user_id, grant_key,
           coalesce(sum(credit_usd) OVER prior, 0) AS credit_before,
           coalesce(sum(CASE WHEN credit_usd > 0 THEN credit_usd * (1 - paid_usd / credit_usd) END) OVER prior,
                    0) AS saved_before
    FROM account_grants WHERE {accounts}
    WINDOW prior AS (PARTITION BY user_id ORDER BY first_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
) w
WHERE g.user_id = w.user_id AND g.grant_key = w.grant_key
  AND (g.credit_before, g.saved_before) IS DISTINCT FROM (w.credit_before, w.saved_before)
"""

TOTALS_OF = """
SELECT user_id, count(*), coalesce(sum(credit_usd) FILTER (WHERE kind <> 'usage'), 0),
       coalesce(sum(paid_usd), 0), coalesce(sum(spent_usd), 0), max(occurred_at) FILTER (WHERE kind = 'usage'),
       bool_or(expires_at IS NOT NULL OR kind IN ('adjustment', 'expiry'))
FROM {source} GROUP BY user_id ORDER BY user_id
"""

GRANTS_OF = """
SELECT user_id, grant_key, min(id), sum(credit_usd), sum(paid_usd)
FROM {source} WHERE grant_key IS NOT NULL GROUP BY user_id, grant_key ORDER BY user_id, grant_key
"""

# The moments an account's grants change, as 0008's grant_burn marks them: a credit entry (not
# an expiry's), and a grant's expiry. Usage between two of them burns the same grants.
BOUNDS_OF = """
SELECT user_id, occurred_at AS at FROM {source} WHERE kind NOT IN ('usage', 'expiry')
UNION SELECT user_id, expires_at FROM {source} WHERE expires_at IS NOT NULL
"""

# Usage added to the segment that holds its time (the first is '-infinity').
ADD_USAGE = """
INSERT INTO account_usage_segments AS s (user_id, starts_at, spent_usd)
SELECT n.user_id, coalesce(b.starts_at, '-infinity'), sum(n.spent_usd)
FROM {source} n LEFT JOIN LATERAL (
    SELECT s.starts_at FROM account_usage_segments s
    WHERE s.user_id = n.user_id AND s.starts_at <= n.occurred_at ORDER BY s.starts_at DESC LIMIT 1
) b ON true
WHERE n.kind = 'usage'
GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (user_id, starts_at) DO UPDATE SET spent_usd = s.spent_usd + excluded.spent_usd
"""

# New grant events split the segments they fall in: each new segment takes the ledger's usage
# from its start to the next boundary (the ledger already holds this statement's entries, and
# ADD_USAGE already put them in the old segment), and the old segment gives that much up.
SPLIT = f"""
WITH fresh AS (
    SELECT DISTINCT b.user_id, b.at FROM ({BOUNDS_OF.format(source="{source}")}) b
    WHERE NOT EXISTS (SELECT 1 FROM account_usage_segments s WHERE s.user_id = b.user_id AND s.starts_at = b.at)
), cut AS (
    SELECT f.user_id, f.at,
           (SELECT max(s.starts_at) FROM account_usage_segments s
            WHERE s.user_id = f.user_id AND s.starts_at < f.at) AS inside,
           least((SELECT min(s.starts_at) FROM account_usage_segments s
                  WHERE s.user_id = f.user_id AND s.starts_at > f.at),
                 (SELECT min(g.at) FROM fresh g WHERE g.user_id = f.user_id AND g.at > f.at)) AS ends
    FROM fresh f
), sized AS (
    SELECT c.*, (SELECT coalesce(sum(l.spent_usd), 0) FROM ledger_entries l
                 WHERE l.user_id = c.user_id AND l.kind = 'usage' AND l.occurred_at >= c.at
                   AND (c.ends IS NULL OR l.occurred_at < c.ends)) AS spent
    FROM cut c
), given_up AS (
    UPDATE account_usage_segments s SET spent_usd = s.spent_usd - m.spent
    FROM (SELECT user_id, inside, sum(spent) AS spent FROM sized WHERE inside IS NOT NULL GROUP BY 1, 2) m
    WHERE s.user_id = m.user_id AND s.starts_at = m.inside AND m.spent <> 0
)
INSERT INTO account_usage_segments (user_id, starts_at, spent_usd)
SELECT user_id, at, spent FROM sized ORDER BY 1, 2
"""

TRIGGER = f"""
CREATE FUNCTION ledger_entries_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- First, and in user id order: the totals row is each account's lock, so two writers of
    -- one account's grants run one after the other, and none can deadlock another.
    INSERT INTO account_totals AS t (user_id, entries, credited_usd, paid_usd, spent_usd, last_spend_at, replays)
    {TOTALS_OF.format(source="new_entries")}
    ON CONFLICT (user_id) DO UPDATE SET
        replays = t.replays OR excluded.replays,
        entries = t.entries + excluded.entries,
        credited_usd = t.credited_usd + excluded.credited_usd,
        paid_usd = t.paid_usd + excluded.paid_usd,
        spent_usd = t.spent_usd + excluded.spent_usd,
        last_spend_at = greatest(t.last_spend_at, excluded.last_spend_at);
    {ADD_USAGE.format(source="new_entries")};
    IF EXISTS (SELECT 1 FROM new_entries WHERE kind <> 'usage' OR expires_at IS NOT NULL) THEN
        {SPLIT.format(source="new_entries")};
    END IF;
    IF EXISTS (SELECT 1 FROM new_entries WHERE grant_key IS NOT NULL) THEN
        INSERT INTO account_grants AS g (user_id, grant_key, first_id, credit_usd, paid_usd)
        {GRANTS_OF.format(source="new_entries")}
        ON CONFLICT (user_id, grant_key) DO UPDATE SET
            first_id = least(g.first_id, excluded.first_id),
            credit_usd = g.credit_usd + excluded.credit_usd,
            paid_usd = g.paid_usd + excluded.paid_usd;
        {GRANT_ORDER.format(accounts="user_id IN (SELECT user_id FROM new_entries WHERE grant_key IS NOT NULL)")};
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_entries_totals AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_totals();
"""

CREDITS_VIEW = """
CREATE OR REPLACE VIEW account_credits AS
SELECT user_id, credited_usd FROM account_totals
"""

# Columns, names and types as in 0005. savings: grants before the one being consumed are spent
# whole (saved_before); of that one, the part the spend reaches saved (1 - paid/credit) of it.
BALANCES_VIEW = """
CREATE OR REPLACE VIEW account_balances AS
SELECT a.user_id, a.key_alias, a.key_status,
       coalesce(t.credited_usd, 0)::numeric(20, 10) AS credited_usd,
       coalesce(t.paid_usd, 0)::numeric(20, 10) AS paid_usd,
       coalesce(t.spent_usd, 0)::numeric(20, 10) AS spent_usd,
       coalesce(t.credited_usd, 0) - coalesce(t.spent_usd, 0) AS remaining_usd,
       CASE WHEN t.replays THEN (
           SELECT coalesce(sum(CASE WHEN b.credit > 0 THEN b.used * (1 - b.paid / b.credit) END), 0)
           FROM grant_burn(a.user_id, now()) b)
       ELSE coalesce(s.savings, 0) END::numeric(20, 10) AS savings_usd,
       a.budget_pushed_usd, a.budget_pushed_at, t.last_spend_at
FROM accounts a
LEFT JOIN account_totals t ON t.user_id = a.user_id
LEFT JOIN LATERAL (
    SELECT g.saved_before + CASE WHEN g.credit_usd > 0
               THEN least(t.spent_usd - g.credit_before, g.credit_usd) * (1 - g.paid_usd / g.credit_usd)
               ELSE 0 END AS savings
    FROM account_grants g
    WHERE g.user_id = a.user_id AND g.credit_before < t.spent_usd
    ORDER BY g.credit_before DESC, g.first_id DESC
    LIMIT 1
) s ON true
"""


# grant_burn's input, as 0008 wrote it: every entry of the account, usage included.
_BURN_INPUT = """        WITH mine AS (
            SELECT l.id, l.kind, l.grant_key, l.credit_usd, l.paid_usd, l.spent_usd, l.occurred_at, l.expires_at
            FROM ledger_entries l WHERE l.user_id = p_user
        ),"""
_BURN_USAGE = """                  SELECT m.occurred_at, false, m.spent_usd FROM mine m WHERE m.kind = 'usage') x"""
# The same input a grant event and a segment of usage at a time: the entries that are not usage
# (ledger_entries_credits_idx, 0004), and account_usage_segments for the usage between them.
_SEGMENT_INPUT = """        WITH mine AS (
            SELECT l.id, l.kind, l.grant_key, l.credit_usd, l.paid_usd, l.spent_usd, l.occurred_at, l.expires_at
            FROM ledger_entries l WHERE l.user_id = p_user AND l.kind <> 'usage'
        ),"""
_SEGMENT_USAGE = """                  SELECT s.starts_at, false, s.spent_usd FROM account_usage_segments s
                  WHERE s.user_id = p_user) x"""


def _segment_grant_burn() -> str:
    from importlib import import_module

    original = import_module("migrations.versions.0008_credit_tools").GRANT_BURN
    assert _BURN_INPUT in original and _BURN_USAGE in original, "0008's grant_burn changed: update 0009"
    return (original.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
            .replace(_BURN_INPUT, _SEGMENT_INPUT).replace(_BURN_USAGE, _SEGMENT_USAGE))


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE account_totals (
            user_id varchar(128) PRIMARY KEY REFERENCES accounts (user_id),
            entries bigint NOT NULL DEFAULT 0,
            credited_usd numeric(20, 10) NOT NULL DEFAULT 0,
            paid_usd numeric(20, 10) NOT NULL DEFAULT 0,
            spent_usd numeric(20, 10) NOT NULL DEFAULT 0,
            last_spend_at timestamptz,
            replays boolean NOT NULL DEFAULT false
        );
        CREATE TABLE account_usage_segments (
            user_id varchar(128) NOT NULL REFERENCES accounts (user_id),
            starts_at timestamptz NOT NULL,  -- '-infinity', or a moment the account's grants change
            spent_usd numeric(20, 10) NOT NULL,
            PRIMARY KEY (user_id, starts_at)
        );
        CREATE TABLE account_grants (
            user_id varchar(128) NOT NULL REFERENCES accounts (user_id),
            grant_key text NOT NULL,
            first_id bigint NOT NULL,
            credit_usd numeric(20, 10) NOT NULL,
            paid_usd numeric(20, 10) NOT NULL,
            -- Unconstrained numeric: exact sums, rounded once, where account_balances shows them.
            credit_before numeric NOT NULL DEFAULT 0,
            saved_before numeric NOT NULL DEFAULT 0,
            PRIMARY KEY (user_id, grant_key)
        );
        CREATE INDEX account_grants_consumed_idx ON account_grants (user_id, credit_before, first_id);
        CREATE TABLE audit_mismatches (
            user_id varchar(128) PRIMARY KEY REFERENCES accounts (user_id),
            found_at timestamptz NOT NULL DEFAULT now(),
            ledger jsonb,
            stored jsonb
        );
        CREATE TABLE audit_cursor (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            after_user_id varchar(128) NOT NULL DEFAULT '',
            passes bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX ledger_entries_history_idx ON ledger_entries (user_id, occurred_at, id);
        DROP INDEX ledger_entries_user_idx;
        -- No entry may be written between the backfill and the trigger.
        LOCK TABLE ledger_entries IN SHARE MODE;
        """
    )
    op.execute(TRIGGER)
    op.execute("INSERT INTO account_totals (user_id, entries, credited_usd, paid_usd, spent_usd, last_spend_at, "
               "replays) " + TOTALS_OF.format(source="ledger_entries"))
    op.execute("INSERT INTO account_grants (user_id, grant_key, first_id, credit_usd, paid_usd) "
               + GRANTS_OF.format(source="ledger_entries"))
    op.execute(ADD_USAGE.format(source="ledger_entries"))
    op.execute(SPLIT.format(source="ledger_entries"))
    op.execute(GRANT_ORDER.format(accounts="true"))
    op.execute(_segment_grant_burn())
    # Its estimates are generic (a plan for any account); JIT-compiling that plan cost 35-40 ms a
    # call here, against about 1 ms to run it.
    op.execute("ALTER FUNCTION grant_burn(varchar, timestamptz) SET jit = off")
    op.execute(CREDITS_VIEW)
    op.execute(BALANCES_VIEW)
    op.execute("ANALYZE account_totals; ANALYZE account_grants")


def downgrade() -> None:
    from importlib import import_module

    op.execute("DROP VIEW account_balances; DROP VIEW account_credits")
    op.execute(import_module("migrations.versions.0005_account_credits").CREDITS_VIEW)
    op.execute(import_module("migrations.versions.0008_credit_tools").BALANCES_VIEW)
    op.execute(import_module("migrations.versions.0008_credit_tools").GRANT_BURN
               .replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute(
        """
        DROP TRIGGER ledger_entries_totals ON ledger_entries;
        DROP FUNCTION ledger_entries_totals();
        CREATE INDEX ledger_entries_user_idx ON ledger_entries (user_id, id);
        DROP INDEX ledger_entries_history_idx;
        DROP TABLE account_usage_segments;
        DROP TABLE audit_cursor; DROP TABLE audit_mismatches; DROP TABLE account_grants; DROP TABLE account_totals;
        """
    )
