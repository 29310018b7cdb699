"""`flower`: Flower on this app's broker, behind basic auth from FLOWER_USER / FLOWER_PASSWORD."""

from __future__ import annotations

import os

import typer

from worker.cli.common import RUN, CliError, friendly

DEFAULT_PASSWORD = "change-me"


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=RUN)
    @friendly
    def flower(
        port: int = typer.Option(5555, min=1, max=65535, help="Port to serve Flower on."),
        address: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for every interface, as "
                                                      "inside a container)."),
    ) -> None:
        """Run Flower (task states, workers, /metrics) with basic auth from settings."""
        from worker.app import app as celery_app
        from worker.settings import get_settings

        s = get_settings()
        password = s.flower_password.get_secret_value()
        if not password or password == DEFAULT_PASSWORD:
            # Flower shows every task's arguments (user ids, emails): never behind a known password.
            raise CliError("FLOWER_PASSWORD is unset or still the default; set it before starting Flower")
        if ":" in s.flower_user or "," in s.flower_user or "," in password:
            raise CliError("FLOWER_USER may not contain ':' or ',', nor FLOWER_PASSWORD ','")
        # Through Flower's own environment option rather than argv, so `ps` never shows the password.
        os.environ["FLOWER_BASIC_AUTH"] = f"{s.flower_user}:{password}"
        from worker.logs import configure

        configure()  # Flower's (tornado's) log lines as JSON too when LOG_FORMAT=json
        celery_app.start(["flower", f"--address={address}", f"--port={port}"])
