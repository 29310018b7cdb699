"""`reconcile [--fix] [--json]`: compare the proxy's key budgets and spend with the ledger."""

from __future__ import annotations

import typer

from worker.cli.common import CliError, console, emit, emit_table, friendly


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly
    def reconcile(
        fix: bool = typer.Option(False, "--fix", help="Push the ledger's total to every drifted key."),
        json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Check every key's max_budget and spend against the ledger (differences are reported, exit 0)."""
        from worker.credits.reconcile import reconcile_alone

        report = reconcile_alone(fix=fix)
        if report is None:
            raise CliError("another reconcile is running; try again when it has finished")
        if json:
            emit(report, True)
            return
        emit({"checked": report.checked, "drifted": len(report.drifted), "fixed": report.fixed,
              "pending keys": len(report.pending), "spend mismatches": len(report.spend_mismatches),
              "spend repaired": len(report.spend_repaired), "keys not checked": report.key_errors,
              "errors": len(report.errors),
              "ledger audit mismatches": len(report.ledger_audit.mismatches) if report.ledger_audit else 0},
             False, title="reconcile" + (" --fix" if fix else ""))
        if report.drifted:
            emit_table([vars(d) for d in report.drifted], "max_budget drift (proxy vs ledger)")
        if report.spend_mismatches:
            emit_table([vars(d) for d in report.spend_mismatches], "spend differences (proxy vs ledger)")
        for error in report.errors:
            console.print(f"error: {error}", highlight=False, soft_wrap=True)
