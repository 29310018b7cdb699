"""Entry point of `litellm-credits`; each command group lives in its own module."""

from __future__ import annotations

import typer

app = typer.Typer(help="Credit worker beside a LiteLLM proxy.", no_args_is_help=True, add_completion=False)


def _register() -> None:
    """Every module in worker/cli with a `register(app)` adds its commands."""
    import importlib
    import pkgutil

    import worker.cli

    for info in sorted(pkgutil.iter_modules(worker.cli.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"worker.cli.{info.name}")
        if hasattr(module, "register"):
            module.register(app)


_register()

if __name__ == "__main__":
    app()
