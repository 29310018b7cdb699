"""Messages the worker sends itself (not producers'): their bodies, validated like any event."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt


class SpendWindow(BaseModel):
    """`spend.window`: read or verify the spend window starting at `start`, for beat run `run_id`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: AwareDatetime
    run_id: StrictInt | None = None


class AlertWebhook(BaseModel):
    """`ops.alert_webhook`: POST fired alert `fired_alert_id` (a fired_alerts row) to ALERT_WEBHOOK_URL.

    An id, never the alert itself: the worker only sends what it wrote, whoever pushed the message."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fired_alert_id: StrictInt = Field(gt=0)
