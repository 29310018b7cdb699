"""What every command shares: JSON or rich-table output, and one-line errors with exit codes."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

# Help panels (`litellm-credits --help`), by purpose.
RUN = "Run and set up"
ACCOUNTS = "Accounts"
CREDIT = "Credit"
OPERATE = "Operate and repair"

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")  # fixed point: a NUMERIC zero is "0.0000000000", not "0E-10"
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(_plain(value), ensure_ascii=False, indent=2))


def emit_table(rows: Iterable[Mapping[str, Any]], title: str | None = None) -> None:
    rows = [_plain(r) for r in rows]
    table = Table(title=title)
    if not rows:
        console.print(f"{title + ': ' if title else ''}nothing to show")
        return
    for column in rows[0]:
        table.add_column(str(column))
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(table)


def emit(value: Any, as_json: bool, title: str | None = None) -> None:
    if as_json:
        emit_json(value)
    elif isinstance(value, list):
        emit_table(value, title)
    else:
        emit_table([{"field": k, "value": v} for k, v in _plain(value).items()], title)


class CliError(Exception):
    """An error the user can act on; printed as one line, exit code 1."""


def friendly(fn: F) -> F:
    """Turn any failure into one clear line on stderr and a non-zero exit, never a traceback."""

    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except (CliError, LookupError, ValueError) as exc:
            err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as exc:  # noqa: BLE001 - the one place a traceback becomes a sentence
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            err_console.print(f"error: {type(exc).__name__}: {first}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return run  # type: ignore[return-value]
