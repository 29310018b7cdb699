"""Spend commands: `sync-spend` (a sync or backfill by hand) and `usage` (daily usage per model)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer
from sqlalchemy import text

from worker.cli.common import ACCOUNTS, OPERATE, CliError, emit, err_console, friendly


def parse_time(value: str | None, option: str) -> datetime | None:
    """ISO 8601 or 'YYYY-MM-DD HH:MM:SS'; without an offset it means UTC, as on the proxy."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{option}: not a time: {value!r} (e.g. 2026-11-20T10:00:00Z)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def register(app: typer.Typer) -> None:
    @app.command("sync-spend", rich_help_panel=OPERATE)
    @friendly
    def sync_spend(
        start: str = typer.Option(None, "--from", help="Backfill from (UTC); default with --to: the cursor."),
        end: str = typer.Option(None, "--to", help="End (UTC); default: now less SPEND_SETTLE_S."),
        json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Read and verify the spend windows due now, in this process, or backfill with --from/--to.

        What beat's spend.sync sends to the workers, run here and now."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from worker.spend.sync import sync

        since, until = parse_time(start, "--from"), parse_time(end, "--to")
        if since and until and since >= until:
            raise CliError("--from must be before --to")
        with Progress(TextColumn("spend logs"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("sync", total=None)

            def progress(done_s: float, total_s: float) -> None:
                bar.update(task, completed=done_s, total=total_s)

            result = sync(start=since, end=until, progress=progress)
        if result.skipped:
            raise CliError("another spend sync is running; try again when it has finished")
        summary = {
            "from": result.span.start if result.span else None,
            "to": result.span.end if result.span else None,
            "pages": result.counts.pages, "rows_seen": result.counts.rows_seen,
            "inserted": result.counts.inserted, "debited": result.counts.debited,
            "skipped": result.counts.skipped, "rejected": result.counts.rejected, "cursor": result.cursor,
        }
        emit(summary, json, title="spend sync")

    @app.command(rich_help_panel=ACCOUNTS)
    @friendly
    def usage(
        user_id: str,
        days: int = typer.Option(30, "--days", min=1, max=3660, help="Days back, today (UTC) included."),
        json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """The user's usage per day and model, from the stored spend logs."""
        from worker.db import session_scope
        from worker.models import Account

        since = datetime.now(UTC).date() - timedelta(days=days - 1)
        with session_scope() as session:
            if session.get(Account, user_id) is None:
                raise CliError(f"no account for user {user_id!r}")
            rows = session.execute(
                text(
                    "SELECT day, model, requests, failed_requests, prompt_tokens, completion_tokens, spend_usd "
                    "FROM daily_usage "
                    "WHERE user_id = :u AND day >= :since ORDER BY day DESC, model"
                ),
                {"u": user_id, "since": since},
            ).mappings().all()
        # A date is not a datetime: the shared JSON output would not know it.
        emit([{**r, "day": r["day"].isoformat()} for r in rows], json, title=f"usage of {user_id}, last {days} days")
