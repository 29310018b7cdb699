"""Entry point of `litellm-credits`; each command group lives in its own module."""

from __future__ import annotations

import typer

app = typer.Typer(help="Credit worker beside a LiteLLM proxy.", no_args_is_help=True, add_completion=False,
                  epilog="Exit codes: 0 done; 1 the command found something to act on (check: a failed check; "
                         "status: no worker alive or dead letters open; reconcile: drift left unfixed; audit: "
                         "totals that differ from the ledger) or refused its input; 2 it could not run (invalid "
                         "settings, a dependency unreachable, a start-up check failed).")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"litellm-credits {version('litellm-credits')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Credit worker beside a LiteLLM proxy."""


def _register() -> None:
    """Every module in worker/cli with a `register(app)` adds its commands."""
    import importlib
    import pkgutil

    import worker.cli

    # The "Run and set up" commands first, so that panel heads `--help`; the rest by name.
    first = ("run", "check", "serve", "flower")
    for info in sorted(pkgutil.iter_modules(worker.cli.__path__),
                       key=lambda m: (first.index(m.name) if m.name in first else len(first), m.name)):
        module = importlib.import_module(f"worker.cli.{info.name}")
        if hasattr(module, "register"):
            module.register(app)


_register()

if __name__ == "__main__":
    app()
