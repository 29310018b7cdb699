"""Messages the worker sends itself (not producers'): their bodies, validated like any event."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict


class SpendWindow(BaseModel):
    """`spend.window`: read or verify the spend window starting at `start`, for beat run `run_id`.

    `reader` names this message's hold on the window, so its own retry takes the window back at
    once instead of waiting out the lease that a crash of its first attempt left behind."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: AwareDatetime
    run_id: int | None = None
    reader: str | None = None
