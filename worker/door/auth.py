"""The web app's bearer token, compared in constant time with every token in API_TOKENS."""

from __future__ import annotations

import hmac

from fastapi import Request

from worker.door.body import Refused
from worker.settings import get_settings


async def bearer(request: Request) -> None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given_bytes = given.strip().encode("latin-1", "replace")
    matched = False
    # Every token is compared, whichever matches: the time taken says nothing about which.
    for token in get_settings().api_tokens:
        matched |= hmac.compare_digest(given_bytes, token.get_secret_value().encode())
    if scheme.lower() != "bearer" or not given_bytes or not matched:
        raise Refused(401, "missing or wrong bearer token", "unauthorized", {"WWW-Authenticate": "Bearer"})
