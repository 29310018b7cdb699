"""Render docs/reliability-results/*.json (written by the chaos suite) into docs/reliability.md.

    uv run python -m tests.chaos.report

Only the part between the `figures:start` and `figures:end` markers is replaced; the rest of the
document is prose kept by hand. Standalone on purpose: no settings, no services.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "reliability-results"
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"
COLUMNS = [("events_sent", "sent"), ("messages_published", "messages"), ("applied", "applied"),
           ("duplicated", "duplicated"), ("lost", "lost"), ("dead_lettered", "dead-lettered"),
           ("drain_s", "time to drain (s)")]


def _order(path: Path) -> tuple[int, str]:
    match = re.match(r"(\d+)(.*)", path.stem)
    return (int(match.group(1)), match.group(2)) if match else (10**6, path.stem)


def load() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"), key=_order)]


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _extra(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_extra(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_extra(v) for v in value)
    return str(value)


def _name(result: dict[str, Any]) -> str:
    return f"{result['scenario'].split('-', 1)[0]}. {result.get('title', result['scenario'])}"


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for r in results:
        lines.append(f"| {_name(r)} | " + " | ".join(_cell(r.get(key)) for key, _ in COLUMNS) + " |")
    lines.append("")
    for r in results:
        lines += [
            f"**{_name(r)}** — recorded {r.get('recorded_at')} at commit `{r.get('commit') or '?'}` "
            f"on {r.get('cpus')} CPUs",
            "",
            f"- run: `{r.get('command')}`",
            f"- injected: {r.get('injects')}",
        ]
        for key, value in (r.get("extra") or {}).items():
            label = key.replace("_", " ")
            label = label[:-2] + " (s)" if label.endswith(" s") else label
            lines.append(f"- {label}: {_extra(value)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    results = load()
    if not results:
        print(f"no results in {RESULTS}: run ./scripts/test -m chaos first", file=sys.stderr)
        return 1
    doc = DOC.read_text()
    if START not in doc or END not in doc:
        print(f"{DOC} lacks the {START} / {END} markers", file=sys.stderr)
        return 1
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{render(results)}{END}{tail}")
    print(f"{DOC.relative_to(ROOT)}: figures of {len(results)} scenarios")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
