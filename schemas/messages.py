"""Messages the worker sends itself (not producers'): their bodies, validated like any event."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt


class SpendWindow(BaseModel):
    """`spend.window`: read or verify the spend window starting at `start`, for beat run `run_id`.

    `reader` names this message's hold on the window, so its own retry takes the window back at
    once instead of waiting out the lease that a crash of its first attempt left behind."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: AwareDatetime
    run_id: StrictInt | None = None
    reader: str | None = None


class AlertWebhook(BaseModel):
    """`ops.alert_webhook`: POST fired alert `fired_alert_id` (a fired_alerts row) to ALERT_WEBHOOK_URL.

    An id, never the alert itself: the worker only sends what it wrote, whoever pushed the message."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fired_alert_id: StrictInt = Field(gt=0)
