"""`adjust USER_ID AMOUNT_USD --reason --reference [--actor] [--force]`: an operator's correction."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime

import typer
from pydantic import ValidationError

from worker.cli.common import CREDIT, CliError, emit, friendly


def _operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "cli"


def register(app: typer.Typer) -> None:
    # ignore_unknown_options: a negative AMOUNT_USD such as -5 is an argument, not an option.
    @app.command(context_settings={"ignore_unknown_options": True}, rich_help_panel=CREDIT)
    @friendly
    def adjust(
        user_id: str,
        amount_usd: str = typer.Argument(..., help="USD to add, or to take back when negative (e.g. -2.50)."),
        reason: str = typer.Option(..., help="Why, for the ledger."),
        reference: str = typer.Option(..., help="Unique reference: the same one twice adjusts once."),
        actor: str = typer.Option(None, help="Who made it; default the login name."),
        force: bool = typer.Option(False, "--force", help="Allow lowering the credited total below what is spent."),
        json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Add or take back credit by hand: one `adjustment` ledger entry, then the key's new budget."""
        from schemas.events import AdjustmentEvent, describe
        from worker import proxy
        from worker.credits import ledger
        from worker.credits.adjustments import adjust as apply
        from worker.db import session_scope
        from worker.errors import Rejected

        try:
            event = AdjustmentEvent(user_id=user_id, amount_usd=amount_usd, reason=reason, reference=reference,
                                    actor=actor or _operator(), occurred_at=datetime.now(UTC))
        except ValidationError as exc:
            raise CliError(f"invalid adjustment: {describe(exc)}") from None
        try:
            written = apply(event, force=force)
        except Rejected as exc:
            raise CliError(f"refused: {exc}") from None
        except proxy.ProxyError as exc:
            raise CliError(f"the adjustment is in the ledger, but the key's budget could not be pushed ({exc}); "
                           "run the same command again, or `reconcile --fix`") from None
        with session_scope() as session:
            row = ledger.balance(session, user_id)
        assert row is not None
        emit({"user_id": user_id, "idempotency_key": event.idempotency_key,
              "applied": "now" if written else "already", "credited_usd": row.credited_usd,
              "spent_usd": row.spent_usd, "budget_pushed_usd": row.budget_pushed_usd}, json,
             title=f"adjustment {reference}")
