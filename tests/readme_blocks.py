"""Code blocks of README.md, by section: the tests (and bench/dashboard.py) run them as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
KEY_SECTION = "Showing a user their key"


def section(heading_contains: str) -> str:
    """The text of the `## ` section whose heading contains this, up to the next `## `."""
    parts = re.split(r"^## ", README.read_text(), flags=re.M)
    found = [p for p in parts if heading_contains in p.splitlines()[0]]
    assert len(found) == 1, f"one README section with {heading_contains!r} in its heading, found {len(found)}"
    return found[0]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S)


def dashboard_reads() -> dict[str, str]:
    """The section's SQL for node-postgres, by the name in each block's first line ("-- name: ...")."""
    reads = {}
    for sql in blocks(section(KEY_SECTION), "sql"):
        first, _, rest = sql.partition("\n")
        reads[first.removeprefix("-- ").split(":")[0]] = rest.strip()
    return reads


def bind_names(sql: str) -> str:
    """node-postgres's $1, $2 as SQLAlchemy's :p1, :p2."""
    return re.sub(r"\$(\d+)", r":p\1", sql)
