"""POST /v1/events/{kind}: the web app's events, as docs/events.md gives them, with no signature.

Validated by schemas/events.py (422 naming each field and why), signed with EVENT_SIGNING_SECRET
and queued by the producer; 202 with the task id once the event is on its Redis list.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from worker import producer
from worker.door import relay
from worker.door.auth import bearer
from worker.door.body import Refused, invalid, json_object, raw_body
from worker.door.metrics import EVENTS

router = APIRouter(dependencies=[Depends(bearer)])
PUBLISH = {"signup": producer.publish_signup, "payment": producer.publish_payment,
           "refund": producer.publish_refund, "adjustment": producer.publish_adjustment,
           "redeem": producer.publish_redeem}


@router.post("/v1/events/{kind}", status_code=202)
async def post_event(kind: str, request: Request) -> Any:
    publish = PUBLISH.get(kind)
    if publish is None:
        raise Refused(404, f"no event kind {kind!r}; one of {', '.join(PUBLISH)}", "unknown_kind")
    try:
        event = json_object(await raw_body(request))
        task_id = await run_in_threadpool(relay.queue, publish, event)
    except ValidationError as exc:
        EVENTS.labels(kind, "invalid").inc()
        return JSONResponse(status_code=422, content=invalid(exc.errors()))
    except Refused as refused:
        EVENTS.labels(kind, refused.outcome).inc()
        raise
    EVENTS.labels(kind, "queued").inc()
    return {"task_id": task_id}

