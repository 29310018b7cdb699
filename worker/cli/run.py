"""`run` (migrate, then a worker with embedded beat on every queue) and `migrate`."""

from __future__ import annotations

import typer

from worker.cli.common import friendly


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly
    def migrate() -> None:
        """Apply database migrations."""
        from worker.migrate import upgrade

        upgrade()
        typer.echo("database is at the latest migration")

    @app.command()
    def run(
        concurrency: int = typer.Option(2, help="Worker processes."),
        loglevel: str = typer.Option("INFO", help="Log level."),
    ) -> None:
        """Apply migrations, then run one worker with the beat embedded, on all queues."""
        from schemas.routes import QUEUES
        from worker.app import app as celery_app
        from worker.migrate import upgrade

        upgrade()
        celery_app.worker_main(
            ["worker", "-B", "-Q", ",".join(QUEUES), "-c", str(concurrency), "-l", loglevel,
             "-s", "/tmp/litellm-credits-beat-schedule"]
        )
