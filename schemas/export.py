"""Write each event's JSON Schema to schemas/json/ for producers in other languages.

    python -m schemas.export          # (re)write schemas/json/*.schema.json
    python -m schemas.export --check  # exit 1 if a committed file differs from the models

The schemas are generated from the pydantic models in schemas/events.py, which stay the source
of truth: tests/test_schemas.py fails when the committed files drift from them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas.events import EVENT_MODELS, Event
from schemas.routes import EVENT_TASKS, ROUTES

OUT_DIR = Path(__file__).resolve().parent / "json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema(name: str, model: type[Event]) -> dict[str, Any]:
    """The model's validation schema (what a producer may send), with where it goes."""
    body = model.model_json_schema(mode="validation")
    task = EVENT_TASKS[name]
    return {
        "$schema": DIALECT,
        "$id": f"{name}.schema.json",
        "description": (
            f"The `event` keyword argument of Celery task {task} on Redis queue {ROUTES[task]} "
            f"(generated from schemas/events.py:{model.__name__} by `python -m schemas.export`)."
        ),
        **body,
    }


def render(name: str, model: type[Event]) -> str:
    return json.dumps(schema(name, model), indent=2, ensure_ascii=False) + "\n"


def path_for(name: str) -> Path:
    return OUT_DIR / f"{name}.schema.json"


def expected() -> dict[Path, str]:
    return {path_for(name): render(name, model) for name, model in EVENT_MODELS.items()}


def stale() -> list[Path]:
    """Files that are missing or differ from what the models generate."""
    return [p for p, text in expected().items() if not p.exists() or p.read_text(encoding="utf-8") != text]


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print(__doc__, file=sys.stderr)
        return 2
    if argv == ["--check"]:
        bad = stale()
        for p in bad:
            print(f"{p} is out of date: run python -m schemas.export", file=sys.stderr)
        return 1 if bad else 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for p, text in expected().items():
        p.write_text(text, encoding="utf-8")
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
