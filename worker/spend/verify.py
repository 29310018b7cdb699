"""Verification by ranges: the windows already read are checked again a range at a time.

A row the proxy files late lands in a window read long ago, so every window of the horizon
(SPEND_VERIFY_S) is checked now and then: the source's count against the rows stored. A request
per window was about 40 a minute on an idle proxy, growing with the horizon, not with traffic.
Here the read windows are grouped in tiers by age (late rows are likelier in newer ones, so
newer tiers are checked more often), and a due tier is counted a run of consecutive windows at a
time, one request a run. Only where a run's count differs from what is stored does the check
descend: the run is halved and each half counted, down to single windows, which are flagged
(verified_at NULL) for the readers to read again (worker.spend.plan.due). A source that can count
many windows at once (the proxy's database) counts every window of the due tiers in one statement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import text

from worker.db import session_scope
from worker.settings import get_settings
from worker.spend.ingest import Counts, stored_between, stored_by_window
from worker.spend.plan import recheck_after
from worker.spend.read import Source
from worker.spend.windows import Window

log = logging.getLogger(__name__)
# Ages where the newer tiers end; the last tier runs to the end of the horizon.
TIERS = (timedelta(hours=1), timedelta(hours=4))


class CountsMany(Protocol):
    def count_windows(self, windows: list[Window]) -> list[int]: ...


@dataclass(frozen=True)
class Read:
    start: datetime
    end: datetime
    verified_at: datetime | None

    @property
    def window(self) -> Window:
        return Window(self.start, self.end)


def verify(source: Source, now: datetime, counts: Counts) -> list[datetime]:
    """Check the tiers that are due; returns the starts of the windows flagged for a re-read."""
    with session_scope() as session:
        rows = session.execute(
            text("SELECT start_time, end_time, verified_at FROM spend_windows "
                 "WHERE read_to = end_time AND verified_at IS NOT NULL AND end_time > :oldest ORDER BY start_time"),
            {"oldest": now - timedelta(seconds=get_settings().spend_verify_s)},
        ).all()
    due = [w for tier in _tiers([Read(*r) for r in rows], now) if _is_due(tier, now) for w in tier]
    if not due:
        return []
    if hasattr(source, "count_windows"):
        differ = _all_at_once(source, due, counts)
    else:
        differ = [w for run in _runs(due) for w in _descend(source, run, counts)]
    flagged = {w.start for w in differ}
    with session_scope() as session:
        session.execute(text("UPDATE spend_windows SET verified_at = CASE WHEN start_time = ANY(:bad) THEN NULL "
                             "ELSE :now END WHERE start_time = ANY(:all)"),
                        {"bad": list(flagged), "now": now, "all": [w.start for w in due]})
    if flagged:
        log.info("spend verification: %d of %d windows differ from the %s; read again", len(flagged), len(due),
                 source.name)
    return sorted(flagged)


def _tiers(windows: list[Read], now: datetime) -> list[list[Read]]:
    tiers: list[list[Read]] = [[] for _ in range(len(TIERS) + 1)]
    for w in windows:
        age = now - w.end
        tiers[next((i for i, bound in enumerate(TIERS) if age < bound), len(TIERS))].append(w)
    return tiers


def _is_due(tier: list[Read], now: datetime) -> bool:
    """A tier rests as long as its newest windows would (plan.recheck_after); all of it is
    counted when any of it has rested that long."""
    if not tier:
        return False
    rest = recheck_after(now - tier[-1].end)
    return any(w.verified_at is None or now - w.verified_at >= rest for w in tier)


def _runs(windows: list[Read]) -> list[list[Read]]:
    """Consecutive windows together: a range must not span a window that is not read yet."""
    runs: list[list[Read]] = []
    for w in windows:
        if runs and runs[-1][-1].end == w.start:
            runs[-1].append(w)
        else:
            runs.append([w])
    return runs


def _descend(source: Source, run: list[Read], counts: Counts) -> list[Read]:
    """The windows of the run whose rows differ from the source's, by halving where counts differ."""
    whole = Window(run[0].start, run[-1].end)
    found = source.count(whole)  # None at the source's count cap: only smaller ranges can be counted
    counts.rows_seen += source.count_rows
    if found is not None:
        with session_scope() as session:
            stored = stored_between(session, whole.start, whole.end)
        if found == stored:
            return []
        if len(run) == 1 and found < stored:
            # The source holds fewer rows than we stored (its own retention dropped some): a read
            # finds nothing new, so the window is left as it is.
            return []
    if len(run) == 1:
        return run
    middle = len(run) // 2
    return _descend(source, run[:middle], counts) + _descend(source, run[middle:], counts)


def _all_at_once(source: CountsMany, windows: list[Read], counts: Counts) -> list[Read]:
    found = source.count_windows([w.window for w in windows])
    with session_scope() as session:
        stored = stored_by_window(session, [w.window for w in windows])
    return [w for w, f, s in zip(windows, found, stored, strict=True) if f > s]
