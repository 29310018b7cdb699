"""Per-user commands: `balance`, `key`, `ledger`."""

from __future__ import annotations

import typer
from sqlalchemy import select

from worker.cli.common import ACCOUNTS, CliError, emit, friendly


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=ACCOUNTS)
    @friendly
    def balance(user_id: str, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """The account's row of the account_balances view."""
        from worker.credits import ledger
        from worker.db import session_scope

        with session_scope() as session:
            row = ledger.balance(session, user_id)
        if row is None:
            raise CliError(f"no account for user {user_id!r}")
        emit(row, json, title=f"balance of {user_id}")

    @app.command(rich_help_panel=ACCOUNTS)
    @friendly
    def key(user_id: str, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """Reveal the user's virtual key (decrypted) and its state, for ops."""
        from worker.credits import keys
        from worker.db import session_scope
        from worker.models import Account

        with session_scope() as session:
            account = session.get(Account, user_id)
            if account is None:
                raise CliError(f"no account for user {user_id!r}")
            info = {"user_id": user_id, "key_alias": account.key_alias, "key_status": account.key_status,
                    "key": keys.decrypt(account.key_encrypted), "key_hash": account.key_hash}
        emit(info, json, title=f"key of {user_id}")

    @app.command(rich_help_panel=ACCOUNTS)
    @friendly
    def ledger(
        user_id: str,
        limit: int = typer.Option(50, min=1, max=1000, help="Entries per page."),
        page: int = typer.Option(1, min=1, help="Page, newest first."),
        json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """The user's ledger entries, newest first (by when they happened)."""
        from worker.db import session_scope
        from worker.models import LedgerEntry

        with session_scope() as session:
            entries = session.execute(
                # The order ledger_entries_history_idx (user_id, occurred_at, id) holds them in.
                select(LedgerEntry).where(LedgerEntry.user_id == user_id)
                .order_by(LedgerEntry.occurred_at.desc(), LedgerEntry.id.desc())
                .limit(limit).offset((page - 1) * limit)
            ).scalars().all()
            # Adjustments carry why and by whom; a promo entry names its code by its hint.
            rows = [{"id": e.id, "kind": e.kind, "credit_usd": e.credit_usd, "paid_usd": e.paid_usd,
                     "spent_usd": e.spent_usd, "occurred_at": e.occurred_at,
                     "idempotency_key": e.idempotency_key,
                     "reason": (e.details or {}).get("reason") or _code((e.details or {}).get("hint")),
                     "actor": (e.details or {}).get("actor")} for e in entries]
        emit(rows, json, title=f"ledger of {user_id} (page {page})")


def _code(hint: str | None) -> str | None:
    return f"promo code {hint}" if hint else None
