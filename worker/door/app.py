"""The ASGI app of `litellm-credits serve`. Stateless: any number of replicas can share the load.

It needs REDIS_URL and DATABASE_URL, signs with EVENT_SIGNING_SECRET, and never reads
LITELLM_MASTER_KEY or KEY_ENCRYPTION_KEY: it neither calls the proxy nor decrypts a key.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from worker.door import events, health, paystack, reads, stripe
from worker.door.body import invalid
from worker.settings import Settings

log = logging.getLogger(__name__)
# A request waits this long at most for Redis before its 503: the provider's retry is the remedy.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.25, "interval_max": 0.5}
BROKER_TIMEOUTS_S = {"socket_timeout": 5, "socket_connect_timeout": 5}


def create_app() -> FastAPI:
    from worker.app import app as celery_app

    celery_app.conf.task_publish_retry_policy = PUBLISH_RETRY
    celery_app.conf.broker_transport_options = {**celery_app.conf.broker_transport_options, **BROKER_TIMEOUTS_S}
    app = FastAPI(title="litellm-credits", docs_url=None, redoc_url=None, openapi_url=None)
    for module in (paystack, stripe, events, reads, health):
        app.include_router(module.router)
    app.add_exception_handler(HTTPException, _error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(OperationalError, _database_down)
    return app


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("the database did not answer %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return JSONResponse({"error": "the database is unavailable; try again later"}, status_code=503,
                        headers={"Retry-After": "30"})


async def _error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    # A query or path parameter (a date, a limit): the field without its "query" or "path".
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(invalid(exc.errors(), skip=1), status_code=422)


def start_problems(s: Settings) -> tuple[list[str], list[str]]:
    """(errors that stop start-up, warnings) for this configuration, each one line naming a setting."""
    errors, warnings = [], []
    if s.event_signing_secret is None and not s.allow_unsigned_events:
        errors.append("EVENT_SIGNING_SECRET is not set: the relay signs every event with the worker's secret "
                      "(or set ALLOW_UNSIGNED_EVENTS=true to send them unsigned)")
    if s.event_signing_secret is None and s.allow_unsigned_events:
        warnings.append("EVENT_SIGNING_SECRET is not set and ALLOW_UNSIGNED_EVENTS=true: events are queued UNSIGNED")
    for name, what in (("paystack_secret_key", "/webhooks/paystack"), ("stripe_webhook_secret", "/webhooks/stripe")):
        if getattr(s, name) is None:
            warnings.append(f"{name.upper()} is not set: {what} answers 503")
    if not s.api_tokens:
        warnings.append("API_TOKENS is not set: every /v1 request answers 401")
    return errors, warnings
