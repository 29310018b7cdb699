"""`dead-letters list|show|replay|discard`."""

from __future__ import annotations

import typer

from worker.cli.common import OPERATE, CliError, emit, friendly

group = typer.Typer(help="Messages that could not be applied.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="dead-letters", rich_help_panel=OPERATE)


def _row(letter: object, full: bool = False) -> dict[str, object]:
    row = {name: getattr(letter, name) for name in
           ("id", "task_name", "status", "attempts", "reason", "first_failed_at", "last_failed_at")}
    if full:
        from worker.delivery.dead_letters import masked

        row.update(payload=masked(letter.payload), error=letter.error, resolved_at=letter.resolved_at)
    return row


@group.command("list")
@friendly
def list_(
    status: str = typer.Option("open", help="open, replayed or discarded."),
    limit: int = typer.Option(50, min=1, max=1000),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Dead letters, newest first."""
    from worker.db import session_scope
    from worker.delivery import dead_letters

    with session_scope() as session:
        rows = [_row(d) for d in dead_letters.list_open(session, limit, status)]
    emit(rows, json, title=f"{status} dead letters")


@group.command()
@friendly
def show(letter_id: int, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """One dead letter with its payload and error."""
    from worker.db import session_scope
    from worker.models import DeadLetter

    with session_scope() as session:
        letter = session.get(DeadLetter, letter_id)
        if letter is None:
            raise CliError(f"no dead letter {letter_id}")
        row = _row(letter, full=True)
    emit(row, json, title=f"dead letter {letter_id}")


@group.command()
@friendly
def replay(letter_id: int) -> None:
    """Re-enqueue the stored event under its task name (after fixing the cause)."""
    import worker.spend.rejects  # noqa: F401 - registers the replay of a set-aside spend-log row
    from worker.delivery import replay as replays

    task = replays.replay(letter_id)
    typer.echo(f"dead letter {letter_id} re-enqueued as {task}")


@group.command()
@friendly
def discard(letter_id: int) -> None:
    """Mark a dead letter as dealt with, without applying it."""
    from worker.delivery.replay import discard as discard_letter

    discard_letter(letter_id)
    typer.echo(f"dead letter {letter_id} discarded")
