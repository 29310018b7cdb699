"""`codes create|list`: promo codes, printed once when made, then known only by their hash."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation

import typer

from worker.cli.common import CREDIT, CliError, emit, emit_json, friendly

group = typer.Typer(help="Promo codes users redeem through events.redeem.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="codes", rich_help_panel=CREDIT)


@group.command()
@friendly
def create(
    amount_usd: str = typer.Option(..., help="Credit each redemption gives, in USD."),
    count: int = typer.Option(1, min=1, max=10000, help="How many codes."),
    expires: str = typer.Option(None, help="Last moment a code can be redeemed, ISO 8601 with offset."),
    max_uses: int = typer.Option(None, min=1, help="Redemptions allowed per code (by different users); "
                                                   "default unlimited."),
    prefix: str = typer.Option("PROMO", help="Letters or digits each code starts with."),
    credit_expires_days: int = typer.Option(None, min=1, help="The credit of a redemption expires this many "
                                                               "days after it; default never."),
    json: bool = typer.Option(False, "--json", help="Print a JSON list of objects with a `code` field."),
) -> None:
    """Make new codes and print them: they are stored hashed, so this is the only time they are shown."""
    from worker.credits.promo_codes import create_codes
    from worker.db import session_scope

    try:
        amount = Decimal(amount_usd)
    except InvalidOperation:
        raise CliError(f"--amount-usd {amount_usd!r} is not a decimal number") from None
    try:
        expires_at = datetime.fromisoformat(expires) if expires else None
    except ValueError:
        raise CliError(f"--expires {expires!r} is not an ISO 8601 timestamp") from None
    with session_scope() as session:
        made = create_codes(session, amount_usd=amount, count=count, prefix=prefix, expires_at=expires_at,
                            max_uses=max_uses, credit_expires_days=credit_expires_days)
    if json:
        emit_json([{"id": i, "code": code, "amount_usd": amount, "max_uses": max_uses, "expires_at": expires_at,
                    "credit_expires_days": credit_expires_days}
                   for i, code in made])
    else:
        for _, code in made:
            typer.echo(code)


@group.command("list")
@friendly
def list_(json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every code, newest first: its uses and state (active, expired, used up)."""
    from worker.credits.promo_codes import list_codes
    from worker.db import session_scope

    with session_scope() as session:
        rows = list_codes(session)
    emit(rows, json, title="promo codes")
