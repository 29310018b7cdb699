"""`check [--json]`: every dependency, one line each; exit 0, or 1 if any check fails."""

from __future__ import annotations

import typer

from worker.cli.common import RUN, console, emit_json


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=RUN)
    def check(json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """Check every dependency, one line each, naming what to fix; exit 1 if any check fails.

        Settings, PostgreSQL (migrated?), Redis (appendonly, noeviction), the proxy (key, version, spend logs).

        Signing on (or explicitly off), and no secret left at a published sample value."""
        from worker.preflight.report import run_all

        found = run_all()
        if json:
            emit_json([{"check": f.name, "level": f.level, "detail": f.detail} for f in found])
        else:
            style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
            for f in found:
                console.print(f"[{style[f.level]}]{f.level.upper():<4}[/] {f.name}: {f.detail}", highlight=False,
                              soft_wrap=True)
        if any(f.level == "fail" for f in found):
            raise typer.Exit(1)
