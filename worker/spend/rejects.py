"""A spend-log row set aside, stored after all: what replaying its dead letter does (registered
with worker.delivery.replay; the CLI's `dead-letters replay` imports this module)."""

from __future__ import annotations

import json

from sqlalchemy import text
from sqlalchemy.orm import Session

from schemas.proxy import SpendLogRow
from worker.delivery.replay import handles
from worker.models import DeadLetter
from worker.spend import rows
from worker.spend.ingest import DEAD_LETTER_TASK, write_page


@handles(DEAD_LETTER_TASK)
def store_again(session: Session, letter: DeadLetter) -> None:
    """Check the row again under today's settings (a raised SPEND_ROW_MAX_USD, say) and store (and
    debit) it; ValueError, changing nothing, if it still fails."""
    try:
        kept = json.loads(letter.payload)["row"]
        row = rows.from_api(SpendLogRow.model_validate(kept))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"dead letter {letter.id}: the row cannot be read: {exc}") from None
    if isinstance(row, rows.Rejected):
        raise ValueError(f"dead letter {letter.id}: the row is still refused: {row.reason}")
    write_page(session, [row])
    session.execute(text("UPDATE spend_rejected SET resolved_at = now() WHERE dead_letter_id = :d"), {"d": letter.id})
