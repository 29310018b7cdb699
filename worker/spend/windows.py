"""Time windows over the proxy's spend logs: whole seconds, shared boundaries, halving.

The proxy filters `startTime` with both bounds inclusive at whole-second precision while
`startTime` has milliseconds. So a row at 10:05:00.500 is outside `end_date=10:05:00`, and
consecutive windows must share their boundary second to miss nothing; a row at exactly the
boundary is then returned twice, and storage dedupes it by request_id.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from schemas.proxy import SpendLogPage

# Since v1.93 the proxy stops counting at 10,000 rows; a window that reaches it is split.
COUNT_CAP = 10_000
_FORMAT = "%Y-%m-%d %H:%M:%S"


def utc(value: datetime) -> datetime:
    # A time without an offset (SPEND_SYNC_START=2026-01-01T00:00) means UTC, as on the proxy,
    # never the host's local zone.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def whole_second(value: datetime) -> datetime:
    """UTC, truncated to the second: the only precision the proxy's filters understand."""
    return utc(value).replace(microsecond=0)


def as_query(value: datetime) -> str:
    return utc(value).strftime(_FORMAT)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def query(self) -> tuple[str, str]:
        return as_query(self.start), as_query(self.end)

    def halves(self) -> tuple[Window, Window] | None:
        """Two windows sharing the middle second, or None when a second cannot be split further."""
        if self.seconds < 2:
            return None
        middle = self.start + timedelta(seconds=int(self.seconds) // 2)
        return Window(self.start, middle), Window(middle, self.end)

    def __str__(self) -> str:
        return f"[{as_query(self.start)} .. {as_query(self.end)}]"


def windows(start: datetime, end: datetime, size_s: int) -> Iterator[Window]:
    """Consecutive windows from start to end, oldest first, each at most size_s long.

    A generator: a backfill over years never holds its list of windows in memory."""
    start, end = whole_second(start), whole_second(end)
    step = timedelta(seconds=size_s)
    while start < end:
        stop = min(start + step, end)
        yield Window(start, stop)
        start = stop


class TooLarge(Exception):
    """A window holds the count cap or more: read it as two halves."""


def too_large(page: SpendLogPage) -> bool:
    """The first page's count says the window holds at least the count cap (or the count stopped)."""
    return page.total_is_capped or page.total >= COUNT_CAP
