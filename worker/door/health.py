"""GET /healthz (200 only when Redis and PostgreSQL both answer) and GET /metrics (Prometheus)."""

from __future__ import annotations

import logging
from functools import lru_cache

import redis
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from worker.db import session_scope
from worker.door.metrics import REGISTRY
from worker.settings import get_settings

log = logging.getLogger(__name__)
router = APIRouter()


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, socket_timeout=2, socket_connect_timeout=2)


def _check(name: str, probe: object) -> str:
    try:
        probe()  # type: ignore[operator]
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is "down"; the reason is logged
        log.warning("healthz: %s is down (%s)", name, type(exc).__name__)
        return "down"


def _postgres() -> None:
    with session_scope() as session:
        session.execute(text("SELECT 1"))


@router.get("/healthz")
def healthz() -> JSONResponse:
    checks = {"redis": _check("redis", lambda: _redis().ping()), "postgres": _check("postgres", _postgres)}
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse(status_code=200 if healthy else 503, content={"status": "ok" if healthy else "down", **checks})


@router.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
