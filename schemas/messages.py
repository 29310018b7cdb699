"""Messages the worker sends itself (not producers'): their bodies, validated like any event."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict


class SpendWindow(BaseModel):
    """`spend.window`: read or verify the spend window starting at `start`, for beat run `run_id`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: AwareDatetime
    run_id: int | None = None
