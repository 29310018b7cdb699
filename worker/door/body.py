"""The raw request body, read at most MAX_BODY_BYTES, and what the door answers when it is bad."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request

from worker.settings import get_settings

MAX_BODY_BYTES = 1024 * 1024


class Refused(HTTPException):
    """An answer other than success, with a reason the caller can read (never the body itself)."""

    def __init__(self, status: int, reason: str, outcome: str, headers: dict[str, str] | None = None):
        super().__init__(status, reason, headers)
        self.outcome = outcome  # the metrics label


async def raw_body(request: Request) -> bytes:
    """The bytes exactly as received (signatures cover them); 413 past 1 MiB, before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Refused(413, f"body larger than {MAX_BODY_BYTES} bytes", "too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refused(413, f"body larger than {MAX_BODY_BYTES} bytes", "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def signed_body(request: Request, secret_name: str) -> tuple[bytes, str]:
    """The raw body and the provider's secret that signed it; 503 while that secret is not set
    here (the provider keeps retrying until it is)."""
    secret = getattr(get_settings(), secret_name)
    if secret is None:
        raise Refused(503, f"{secret_name.upper()} is not set on this relay", "not_configured")
    return await raw_body(request), secret.get_secret_value()


def invalid(errors: list[Any], skip: int = 0) -> dict[str, Any]:
    """A 422's body: each bad field (its location less `skip` leading parts, such as "query") and
    why, never the value sent (it may be an email or a promo code)."""
    fields = [{"field": ".".join(str(p) for p in err["loc"][skip:]) or ".".join(map(str, err["loc"])) or "event",
               "reason": err["msg"]} for err in errors]
    return {"error": "; ".join(f"{f['field']}: {f['reason']}" for f in fields), "fields": fields}


def json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "body is not JSON", "not_json") from None
    if not isinstance(value, dict):
        raise Refused(400, "body is not a JSON object", "not_json")
    return value
