"""`audit [--json]`: every account's running totals against a full recomputation from the ledger."""

from __future__ import annotations

import typer

from worker.cli.common import OPERATE, emit, emit_table, err_console, friendly


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=OPERATE)
    @friendly
    def audit(json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """Recompute every account's totals and savings from the ledger; exit 1 if any differs."""
        from worker.credits.audit import audit_all, log_report

        report = audit_all()
        log_report(report)
        if json:
            emit(report, True)
        else:
            emit({"accounts": report.accounts, "entries": report.entries, "mismatches": len(report.mismatches)},
                 False, title="ledger audit")
            if report.mismatches:
                emit_table([{"user_id": m.user_id, "part": m.part, "ledger": m.ledger, "stored": m.stored}
                            for m in report.mismatches], "running totals that differ from the ledger")
        if report.mismatches:
            err_console.print(f"error: {len(report.mismatches)} running totals differ from the ledger",
                              highlight=False)
            raise typer.Exit(1)
