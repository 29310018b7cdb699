"""Where the expiry job has got to, so that a run costs what is new since the last one, never
every grant that ever expired.

- settled_until and grants_after_entry_id: every grant expiring up to settled_until, and every
  grant written up to that ledger id, is settled. A run looks at grants expiring since, and at
  grants written since (a late signup's grant can expire in the past).
- late_after_entry_id: entries up to this id were looked at for spend filed after an expiry
  (worker/credits/expiry_corrections.py).

Ids are taken at insert and a transaction commits later, so a watermark stops at entries older
than LAG: the newest ones are looked at again by the next run, which finds them done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

LAG = "10 minutes"


@dataclass(frozen=True)
class ExpiryCursor:
    settled_until: datetime | None
    grants_after: int
    late_after: int


def load(session: Session) -> ExpiryCursor:
    row = session.execute(text(
        "SELECT settled_until, grants_after_entry_id, late_after_entry_id FROM expiry_cursor")).one_or_none()
    return ExpiryCursor(*row) if row else ExpiryCursor(None, 0, 0)  # no row: from the start


def committed_upto(session: Session, after: int) -> int:
    """The newest ledger id a watermark may move to: entries older than LAG."""
    return session.execute(text(
        "SELECT coalesce(max(id), :after) FROM ledger_entries "
        f"WHERE id > :after AND created_at < now() - interval '{LAG}'"
    ), {"after": after}).scalar()


def store_settled(session: Session, until: datetime, upto: int) -> None:
    session.execute(text(
        "INSERT INTO expiry_cursor AS c (settled_until, grants_after_entry_id) VALUES (:until, :upto) "
        "ON CONFLICT (id) DO UPDATE SET settled_until = greatest(c.settled_until, excluded.settled_until), "
        "grants_after_entry_id = greatest(c.grants_after_entry_id, excluded.grants_after_entry_id), "
        "updated_at = now()"), {"until": until, "upto": upto})


def store_late(session: Session, upto: int) -> None:
    session.execute(text(
        "INSERT INTO expiry_cursor AS c (late_after_entry_id) VALUES (:upto) ON CONFLICT (id) DO UPDATE "
        "SET late_after_entry_id = greatest(c.late_after_entry_id, excluded.late_after_entry_id), updated_at = now()"
    ), {"upto": upto})
