"""One finding of a check: what was checked, ok / warn / fail, and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    name: str
    level: Level
    detail: str


def ok(name: str, detail: str) -> Finding:
    return Finding(name, "ok", detail)


def warn(name: str, detail: str) -> Finding:
    return Finding(name, "warn", detail)


def fail(name: str, detail: str) -> Finding:
    return Finding(name, "fail", detail)


def first_line(exc: BaseException) -> str:
    """An exception as one short line: drivers put hints and context on the lines after it."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def safe_url(url: str) -> str:
    """A URL fit for a message: its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
