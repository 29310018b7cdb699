"""`serve`: the HTTP front door (worker/door) on uvicorn."""

from __future__ import annotations

import logging

import typer

from worker.cli.common import RUN


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=RUN)
    def serve(
        host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 in a container only)."),
        port: int = typer.Option(8080, min=1, max=65535, help="Port to listen on."),
    ) -> None:
        """Serve payment webhooks (Paystack, Stripe), the web app's events and the dashboard's reads over HTTP."""
        import uvicorn

        from worker.door.app import create_app, start_problems
        from worker.logs import configure
        from worker.settings import get_settings

        configure()
        for name in ("uvicorn.error", "uvicorn.access"):  # their terminal colouring is no log field
            logging.getLogger(name).addFilter(lambda record: record.__dict__.pop("color_message", True) or True)
        log = logging.getLogger("worker.door")
        errors, warnings = start_problems(get_settings())
        for line in errors:
            typer.echo(f"invalid settings: {line}", err=True)
        if errors:
            raise typer.Exit(2)
        for line in warnings:
            log.warning(line)
        # log_config=None: uvicorn's lines go through our handler (redaction, JSON when asked).
        uvicorn.run(create_app(), host=host, port=port, log_config=None, server_header=False,
                    timeout_graceful_shutdown=10)
