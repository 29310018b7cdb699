"""`status`: queues, workers, spend sync, dead letters and drift, at a glance."""

from __future__ import annotations

from typing import Any

import typer

from worker.cli.common import OPERATE, emit, err_console, friendly


def queue_depths() -> tuple[dict[str, int], int]:
    """Messages waiting per queue, and unacked ones (taken by a worker, not yet done)."""
    from schemas.routes import QUEUES
    from worker.app import app as celery_app

    with celery_app.connection_for_read() as conn:
        channel = conn.default_channel
        # A declare answers with the depth summed over kombu's per-priority lists; on Redis it
        # creates nothing.
        depths = {q: channel.queue_declare(queue=q).message_count for q in QUEUES}
        unacked = channel.client.hlen(channel.unacked_key)
    return depths, unacked


def workers_seen(timeout: float) -> list[str]:
    from worker.app import app as celery_app

    replies = celery_app.control.ping(timeout=timeout) or []
    return sorted(name for reply in replies for name in reply)


def spend_sync(session: Any) -> dict[str, Any]:
    from worker.spend.runs import status

    found = status(session)
    return {"cursor": found.cursor, "lag_seconds": found.lag_seconds, "last_run": found.last_run,
            "last_hour": found.last_hour}


def gather(timeout: float) -> dict[str, Any]:
    from worker import figures
    from worker.db import session_scope

    with session_scope() as session:
        f = figures.read(session.connection())
        sync = spend_sync(session)
    depths, unacked = queue_depths()
    return {
        "queues": depths,
        "unacked": unacked,
        "workers": workers_seen(timeout),
        "spend_sync": sync,
        "dead_letters_open": f.dead_letters_open,
        "dead_letters": [{"task": t, "reason": k, "count": n} for (t, k), n in sorted(f.dead_letters.items())],
        "drift_accounts": f.drift_accounts,
        "audit_mismatches": f.audit_mismatches,
    }


def _rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    """One field/value row per figure, nested parts flattened, for the table."""
    rows = [{"field": f"queue {q}", "value": n} for q, n in status["queues"].items()]
    rows.append({"field": "unacked (in flight)", "value": status["unacked"]})
    rows.append({"field": "workers", "value": ", ".join(status["workers"]) or "none answered"})
    sync = status["spend_sync"]
    rows.append({"field": "spend sync cursor", "value": sync.get("cursor") or sync.get("note", "not synced yet")})
    lag = sync.get("lag_seconds")
    rows.append({"field": "spend sync lag (s)", "value": "" if lag is None else f"{lag:.0f}"})
    last = sync.get("last_run")
    if last:
        rows.append({"field": "spend sync last run", "value": f"{last['status']} at {last['started_at']}"})
    hour = sync.get("last_hour") or {}
    if hour.get("rows_stored"):
        ratio = hour["rows_fetched"] / hour["rows_stored"]
        rows.append({"field": "spend rows fetched per row stored (1 h)", "value": f"{ratio:.2f}"})
    rows.append({"field": "dead letters open", "value": status["dead_letters_open"]})
    rows += [{"field": f"  {d['task']} / {d['reason']}", "value": d["count"]} for d in status["dead_letters"]]
    rows.append({"field": "accounts drifted", "value": status["drift_accounts"]})
    rows.append({"field": "accounts failing the ledger audit", "value": status["audit_mismatches"]})
    return rows


def problems_in(status: dict[str, Any]) -> list[str]:
    """What makes `status` exit 1."""
    found = []
    if not status["workers"]:
        found.append("no worker answered the ping")
    if status["dead_letters_open"]:
        found.append(f"{status['dead_letters_open']} dead letters open (`litellm-credits dead-letters list`)")
    return found


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=OPERATE)
    @friendly
    def status(
        timeout: float = typer.Option(1.0, min=0.1, help="Seconds to wait for workers to answer a ping."),
        json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Queue depths, workers seen, spend sync cursor and lag, dead letters, drifted accounts.

        Exit 1 when no worker answered or dead letters are open (a monitor can run it)."""
        found = gather(timeout)
        emit(found if json else _rows(found), json, title="litellm-credits status")
        problems = problems_in(found)
        if problems:
            err_console.print(f"error: {'; '.join(problems)}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
