"""`run` (the all-in-one local mode: start-up checks, migrate, one worker with the beat embedded)
and `migrate`."""

from __future__ import annotations

import typer

from worker.cli.common import RUN, friendly


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=RUN)
    @friendly
    def migrate() -> None:
        """Apply database migrations (creating the database if it does not exist)."""
        from worker.preflight import startup

        startup.migrate()
        typer.echo("database is at the latest migration")

    @app.command(rich_help_panel=RUN)
    def run(
        concurrency: int = typer.Option(2, help="Worker processes."),
        loglevel: str = typer.Option("INFO", help="Log level."),
    ) -> None:
        """All-in-one local mode: check, migrate, then ONE worker on every queue with the beat embedded.

        Production runs workers (`celery -A worker.app worker`) plus exactly one beat, as docker-compose.yml does.

        Stops at once with one line (exit 2) when a check fails: signing off, master key refused, database down."""
        from schemas.routes import QUEUES
        from worker.preflight import startup

        startup.require(migrating=True)  # before anything is written
        startup.migrate()
        from worker.app import app as celery_app

        celery_app.worker_main(
            ["worker", "-B", "-Q", ",".join(QUEUES), "-c", str(concurrency), "-l", loglevel,
             "-s", "/tmp/litellm-credits-beat-schedule"]
        )
