"""Code blocks of README.md and docs/*.md, by section: the tests (and bench/dashboard.py) run them as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
DASHBOARD = DOCS / "dashboard.md"
SPEND_SYNC = DOCS / "spend-sync.md"
KEY_SECTION = "Showing a user their key"
READS_SECTION = "The dashboard's reads"
WEBAPP_ROLE_SECTION = "The web app's read-only role"
PROXY_ROLE_SECTION = "A read-only role on the proxy's database"


def section(heading_contains: str, doc: Path = README, level: int = 2) -> str:
    """The text of the section of `doc` whose heading (`## `, or `### ` at level 3) contains this, up to
    the next heading of that level or above."""
    parts = re.split(rf"^#{{2,{level}}} ", doc.read_text(), flags=re.M)
    found = [p for p in parts if heading_contains in p.splitlines()[0]]
    assert len(found) == 1, f"one {doc.name} section with {heading_contains!r} in its heading, found {len(found)}"
    return found[0]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^ *```{lang}\n(.*?)^ *```", text, flags=re.M | re.S)


def dashboard_reads() -> dict[str, str]:
    """docs/dashboard.md's SQL for node-postgres, by the name in each block's first line ("-- name: ...")."""
    reads = {}
    for sql in blocks(section(READS_SECTION, DASHBOARD), "sql"):
        first, _, rest = sql.partition("\n")
        reads[first.removeprefix("-- ").split(":")[0]] = rest.strip()
    return reads


def webapp_role() -> str:
    """docs/dashboard.md's statements that create the web app's read-only role (`webapp`)."""
    (sql,) = blocks(section(WEBAPP_ROLE_SECTION, DASHBOARD), "sql")
    return sql


def proxy_reader_role() -> str:
    """docs/spend-sync.md's statements that create the read-only role for LITELLM_DATABASE_URL."""
    (sql,) = blocks(section(PROXY_ROLE_SECTION, SPEND_SYNC), "sql")
    return sql


def bind_names(sql: str) -> str:
    """node-postgres's $1, $2 as SQLAlchemy's :p1, :p2."""
    return re.sub(r"\$(\d+)", r":p\1", sql)
