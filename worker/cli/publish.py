"""`publish signup|payment|refund|adjustment|redeem`: enqueue one event through the producer API, for ops
and smoke tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import typer
from pydantic import ValidationError

from worker.cli.common import CREDIT, CliError, emit, friendly

group = typer.Typer(help="Enqueue one event, validated (and signed) as a producer would.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="publish", rich_help_panel=CREDIT)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _publish(task: str, send: Callable[[dict[str, Any]], str], event: dict[str, Any], as_json: bool) -> None:
    event = {k: v for k, v in event.items() if v is not None}
    try:
        task_id = send(event)
    except ValidationError as exc:
        from schemas.events import describe

        # One line naming each bad field, as the worker would have dead-lettered it.
        raise CliError(f"invalid {task.removeprefix('events.')} event: {describe(exc)}") from None
    if as_json:
        # A promo code is a bearer credential until used up: not echoed into terminals and logs.
        emit({"task": task, "task_id": task_id, "event": {k: "***" if k == "code" else v for k, v in event.items()}},
             True)
    else:
        typer.echo(f"{task} enqueued as task {task_id}")


@group.command()
@friendly
def signup(
    user_id: str,
    email: str = typer.Option(None, help="The user's email."),
    at: str = typer.Option(None, "--at", help="occurred_at, ISO 8601 with offset; default now."),
    json: bool = typer.Option(False, "--json", help="Print the task id and event as JSON."),
) -> None:
    """A signup: an account, the starting credit, a key."""
    from worker.producer import publish_signup

    _publish("events.signup", publish_signup,
             {"user_id": user_id, "email": email, "occurred_at": at or _now()}, json)


@group.command()
@friendly
def payment(
    user_id: str,
    reference: str = typer.Option(..., help="The provider's payment reference (the idempotency key)."),
    amount_minor: int = typer.Option(..., help="Amount in minor units, e.g. 500 for 5.00 USD."),
    currency: str = typer.Option("USD", help="ISO 4217 code."),
    provider: str = typer.Option("paystack", help="Payment provider."),
    plan: str = typer.Option(None, help="Plan name, for the record."),
    at: str = typer.Option(None, "--at", help="paid_at, ISO 8601 with offset; default now."),
    json: bool = typer.Option(False, "--json", help="Print the task id and event as JSON."),
) -> None:
    """A payment for a plan; signed when EVENT_SIGNING_SECRET is set."""
    from worker.producer import publish_payment

    _publish("events.payment", publish_payment,
             {"user_id": user_id, "reference": reference, "amount_minor": amount_minor, "currency": currency,
              "provider": provider, "plan": plan, "paid_at": at or _now()}, json)


@group.command()
@friendly
def refund(
    user_id: str,
    refund_reference: str = typer.Option(..., help="The provider's refund reference (the idempotency key)."),
    payment_reference: str = typer.Option(..., help="The refunded payment's reference."),
    amount_minor: int = typer.Option(..., help="Amount refunded in minor units."),
    currency: str = typer.Option("USD", help="ISO 4217 code."),
    provider: str = typer.Option("paystack", help="Payment provider."),
    at: str = typer.Option(None, "--at", help="refunded_at, ISO 8601 with offset; default now."),
    json: bool = typer.Option(False, "--json", help="Print the task id and event as JSON."),
) -> None:
    """A refund of (part of) a payment; signed when EVENT_SIGNING_SECRET is set."""
    from worker.producer import publish_refund

    _publish("events.refund", publish_refund,
             {"user_id": user_id, "refund_reference": refund_reference, "payment_reference": payment_reference,
              "amount_minor": amount_minor, "currency": currency, "provider": provider,
              "refunded_at": at or _now()}, json)


@group.command(context_settings={"ignore_unknown_options": True})  # a negative AMOUNT_USD is an argument
@friendly
def adjustment(
    user_id: str,
    amount_usd: str = typer.Argument(..., help="USD to add, or to take back when negative (e.g. -2.50)."),
    reason: str = typer.Option(..., help="Why, for the ledger."),
    reference: str = typer.Option(..., help="Unique reference: the same one twice adjusts once."),
    actor: str = typer.Option(..., help="Who made it."),
    at: str = typer.Option(None, "--at", help="occurred_at, ISO 8601 with offset; default now."),
    json: bool = typer.Option(False, "--json", help="Print the task id and event as JSON."),
) -> None:
    """An adjustment through the queue, as a back office would send it (`adjust` applies one here and now)."""
    from worker.producer import publish_adjustment

    _publish("events.adjustment", publish_adjustment,
             {"user_id": user_id, "amount_usd": amount_usd, "reason": reason, "reference": reference,
              "actor": actor, "occurred_at": at or _now()}, json)


@group.command()
@friendly
def redeem(
    user_id: str,
    code: str = typer.Argument(..., help="The promo code the user typed."),
    at: str = typer.Option(None, "--at", help="redeemed_at, ISO 8601 with offset; default now."),
    json: bool = typer.Option(False, "--json", help="Print the task id and event as JSON (the code masked)."),
) -> None:
    """A promo code redemption, as the web app would send it."""
    from worker.producer import publish_redeem

    _publish("events.redeem", publish_redeem, {"user_id": user_id, "code": code, "redeemed_at": at or _now()}, json)
