"""Awaiting a condition instead of sleeping; shared by the tests and the benchmarks (no side effects)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], Any], timeout: float = 30, what: str = "condition", interval: float = 0.05) -> Any:
    """Poll every `interval` s until condition() is truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
