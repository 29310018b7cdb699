"""What we read back from the LiteLLM proxy's admin API. Extra fields are ignored: the proxy adds them freely."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Anything shaped like a virtual key: masked wherever text leaves the worker (logs, dead letters,
# push errors), since an error body or a traceback can carry one.
VIRTUAL_KEY = re.compile(r"sk-[A-Za-z0-9_\-]{8,}")


def redact_keys(text: str) -> str:
    return VIRTUAL_KEY.sub("sk-***", text)


class ProxyModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _exact(value: object) -> object:
    # The proxy speaks JSON floats; str() gives the shortest repr, so 0.1 stays 0.1 exactly. It
    # writes a whole amount as an integer (spend 0 of a failed call): a Decimal too, or the page's
    # union takes the row for a plain object and sets it aside.
    if isinstance(value, float | int) and not isinstance(value, bool):
        return Decimal(str(value))
    return value


class KeyInfo(ProxyModel):
    key_alias: str | None = None
    user_id: str | None = None
    spend: Decimal = Decimal(0)
    max_budget: Decimal | None = None
    budget_duration: str | None = None
    blocked: bool | None = None
    status: str | None = None

    _exact_money = field_validator("spend", "max_budget", mode="before")(_exact)


class KeyInfoResponse(ProxyModel):
    key: str
    info: KeyInfo


class ListedKey(ProxyModel):
    """One key of /key/list?return_full_object=true (or a row of "LiteLLM_VerificationToken"):
    what reconcile compares. Validated one by one, so one bad key is reported on its own."""

    token: str
    key_alias: str | None = None
    max_budget: Decimal | None = None
    spend: Decimal = Decimal(0)
    budget_duration: str | None = None
    updated_at: datetime | None = None  # moved by any write to the key, a spend update included

    _exact_money = field_validator("spend", "max_budget", mode="before")(_exact)

    @field_validator("spend", mode="before")
    @classmethod
    def _null_is_zero(cls, value: object) -> object:
        return 0 if value is None else value

    @field_validator("updated_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # The proxy's column has no zone and holds UTC.
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class KeyListPage(ProxyModel):
    # Plain objects: each is read as a ListedKey on its own (worker.credits.key_sources).
    keys: list[dict[str, Any]] = Field(default_factory=list)
    total_count: int = 0
    current_page: int = 1
    total_pages: int = 0


class GeneratedKey(ProxyModel):
    key: str
    key_alias: str | None = None
    token_id: str | None = None
    max_budget: Decimal | None = None

    _exact_money = field_validator("max_budget", mode="before")(_exact)


class FailedKeyUpdate(ProxyModel):
    key: str
    failed_reason: str = ""


class BulkUpdateResponse(ProxyModel):
    """/key/bulk_update: each key is applied on its own; the ones that were not are listed."""

    total_requested: int
    failed_updates: list[FailedKeyUpdate] = []


class SpendLogRow(ProxyModel):
    request_id: str
    api_key: str = ""
    spend: Decimal = Decimal(0)
    status: str | None = None
    model: str | None = None
    model_group: str | None = None
    user: str | None = None
    startTime: datetime
    endTime: datetime | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    _exact_money = field_validator("spend", mode="before")(_exact)

    @field_validator("prompt_tokens", "completion_tokens", "total_tokens", "spend", mode="before")
    @classmethod
    def _null_is_zero(cls, value: object) -> object:
        return 0 if value is None else value

    @field_validator("api_key", mode="before")
    @classmethod
    def _no_key(cls, value: object) -> object:
        # Rows of unauthenticated or failed-auth calls can carry a null key: stored, never ours.
        return "" if value is None else value

    @field_validator("startTime", "endTime")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # The proxy files rows in UTC; a timestamp without an offset still means UTC.
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class SpendLogPage(ProxyModel):
    # A row pydantic cannot read as a SpendLogRow stays a plain object, so one poison row is set
    # aside on its own (worker.spend.rows) instead of failing its whole page. Left to right: in
    # pydantic's default (smart) mode every good row was also built as a dict of its ~10 KB, which
    # took a 1,000-row page from 19.5 to 54.8 ms to parse.
    data: list[Annotated[SpendLogRow | dict[str, Any], Field(union_mode="left_to_right")]] = Field(
        default_factory=list)
    total: int = 0
    page: int = 1
    page_size: int = 0
    total_pages: int = 0
    total_is_capped: bool = False
