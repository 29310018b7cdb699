"""`reconcile [--fix] [--json]`: compare the proxy's key budgets and spend with the ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from worker.cli.common import OPERATE, CliError, console, emit, emit_table, err_console, friendly

if TYPE_CHECKING:
    from worker.credits.reconcile_report import Report


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=OPERATE)
    @friendly
    def reconcile(
        fix: bool = typer.Option(False, "--fix", help="Push the ledger's total to every drifted key."),
        json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Check every key's max_budget and spend against the ledger; exit 1 if drift is left unfixed.

        Without --fix every difference found counts; with --fix, what it could not repair or check."""
        from worker.credits.reconcile import reconcile_alone

        report = reconcile_alone(fix=fix, full=True)  # the beat reads the changed keys; an operator, every key
        if report is None:
            raise CliError("another reconcile is running; try again when it has finished")
        left = unfixed(report, fix)
        if json:
            emit(report, True)
            _exit_if(left, fix)
            return
        emit({"checked": report.checked, "drifted": len(report.drifted), "fixed": report.fixed,
              "pending keys": len(report.pending), "spend mismatches": len(report.spend_mismatches),
              "spend repaired": len(report.spend_repaired), "spend counters restored": len(report.spend_restored),
              "keys not checked": report.key_errors,
              "errors": len(report.errors),
              "ledger audit mismatches": len(report.ledger_audit.mismatches) if report.ledger_audit else 0},
             False, title="reconcile" + (" --fix" if fix else ""))
        if report.drifted:
            emit_table([vars(d) for d in report.drifted], "max_budget drift (proxy vs ledger)")
        if report.spend_mismatches:
            emit_table([vars(d) for d in report.spend_mismatches], "spend differences (proxy vs ledger)")
        for error in report.errors:
            console.print(f"error: {error}", highlight=False, soft_wrap=True)
        _exit_if(left, fix)


def unfixed(report: Report, fix: bool) -> int:
    """Differences the run leaves behind: every one found without --fix; with it, those not repaired
    (spend_mismatches already holds only the ones a repair did not settle)."""
    budgets = len(report.drifted) + len(report.pending)
    audit = len(report.ledger_audit.mismatches) if report.ledger_audit else 0
    left = max(0, budgets - report.fixed) if fix else budgets + len(report.spend_restored)
    return left + len(report.spend_mismatches) + audit + len(report.errors)


def _exit_if(left: int, fix: bool) -> None:
    if left:
        err_console.print(f"error: {left} differences or unchecked keys left after --fix" if fix else
                          f"error: {left} differences or unchecked keys found; `reconcile --fix` repairs drift",
                          highlight=False)
        raise typer.Exit(1)
