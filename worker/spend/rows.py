"""One spend-log row, from either source, as the ledger will take it, or the reason it cannot.

A row that cannot be stored (a NUL in its id, an over-long key or status, a spend that is not a
finite number) or must not be debited (a spend over SPEND_ROW_MAX_USD) is set aside with its
reason instead of failing its page: one poison row must never stop the debiting of the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from schemas.proxy import SpendLogRow
from worker.money import money
from worker.settings import get_settings

# What spend_logs can hold (migration 0002), checked before the row reaches COPY.
MAX_ID = 512
MAX_KEY = 128
MAX_STATUS = 32
MAX_MODEL = 512
MAX_TOKENS = 2**31 - 1


@dataclass(frozen=True)
class Row:
    request_id: str
    api_key: str
    model: str | None
    spend: Decimal
    prompt_tokens: int
    completion_tokens: int
    status: str | None
    start_time: datetime

    def as_copy(self) -> tuple[Any, ...]:
        return (self.request_id, self.api_key, self.model, self.spend, self.prompt_tokens,
                self.completion_tokens, self.status, self.start_time)


@dataclass(frozen=True)
class Rejected:
    request_id: str
    start_time: datetime | None
    reason: str
    raw: dict[str, Any]


def from_api(item: SpendLogRow | dict[str, Any]) -> Row | Rejected:
    """A row of /spend/logs/v2; a dict is one pydantic could not read as a row at all."""
    if isinstance(item, dict):
        return Rejected(str(item.get("request_id") or ""), None, "not a spend-log row: " + _first_error(item), item)
    # The name the caller asked for (fake-gpt-2), not the provider route (openai/fake-gpt-2).
    return check(item.request_id, item.api_key, item.model_group or item.model, item.spend, item.prompt_tokens,
                 item.completion_tokens, item.status, item.startTime,
                 raw=lambda: item.model_dump(mode="json", include=_RAW_FIELDS))


_RAW_FIELDS = {"request_id", "api_key", "model", "model_group", "spend", "status", "startTime",
               "prompt_tokens", "completion_tokens"}


def _first_error(item: dict[str, Any]) -> str:
    from pydantic import ValidationError

    try:
        SpendLogRow.model_validate(item)
    except ValidationError as exc:
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return "unreadable"


def check(request_id: str, api_key: str | None, model: str | None, spend: Any, prompt_tokens: Any,
          completion_tokens: Any, status: str | None, start_time: datetime, raw: Any = None) -> Row | Rejected:
    """The row as stored, or why not. `raw` (a callable, for speed) gives what a dead letter keeps."""
    problem = None
    try:
        amount = spend if isinstance(spend, Decimal) else Decimal(str(spend))
    except (InvalidOperation, ValueError):
        amount, problem = Decimal(0), f"spend is not a number: {spend!r:.40}"
    api_key = api_key or ""
    if problem:
        pass
    elif not request_id or len(request_id) > MAX_ID or "\x00" in request_id:
        problem = f"request_id must be 1-{MAX_ID} characters without NUL"
    elif len(api_key) > MAX_KEY or "\x00" in api_key:
        problem = f"api_key longer than {MAX_KEY} characters or holding a NUL"
    elif status is not None and (len(status) > MAX_STATUS or "\x00" in status):
        problem = f"status longer than {MAX_STATUS} characters or holding a NUL"
    elif model is not None and (len(model) > MAX_MODEL or "\x00" in model):
        problem = f"model longer than {MAX_MODEL} characters or holding a NUL"
    elif not amount.is_finite() or amount < 0:
        problem = f"spend is not a finite, non-negative amount: {amount}"
    elif amount > get_settings().spend_row_max_usd:
        problem = f"implausible spend: {amount} USD exceeds SPEND_ROW_MAX_USD ({get_settings().spend_row_max_usd})"
    elif not all(isinstance(t, int) and 0 <= t <= MAX_TOKENS for t in (prompt_tokens, completion_tokens)):
        problem = "token counts must be whole numbers from 0 to 2^31 - 1"
    if problem:
        kept = raw() if callable(raw) else raw
        return Rejected(request_id or "", start_time, problem, kept if isinstance(kept, dict) else {"row": kept})
    return Row(request_id, api_key, model, money(amount), prompt_tokens, completion_tokens, status, start_time)


def payload(rejected: Rejected) -> str:
    """A dead letter's payload: the row as it came (with its request_id), as JSON."""
    return json.dumps({"request_id": rejected.request_id, "row": rejected.raw}, default=str, ensure_ascii=False)
