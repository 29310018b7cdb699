"""HMAC-SHA256 over an event's canonical JSON, so that write access to Redis cannot mint credit.

Canonical JSON: the event object as sent, without its `signature` field, keys sorted at every
level, no whitespace (`,` and `:` separators), non-ASCII characters as raw UTF-8. In Node:
`hmacSha256Hex(secret, JSON.stringify(sortKeysDeep(eventWithoutSignature)))`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from worker.errors import Rejected
from worker.settings import get_settings


def canonical(event: dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in event.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(event: dict[str, Any], secret: str) -> str:
    return hmac.new(secret.encode(), canonical(event), hashlib.sha256).hexdigest()


def verify(event: dict[str, Any], secret: str) -> str | None:
    """None when the signature is good, else the reason it is not."""
    given = event.get("signature")
    if not isinstance(given, str) or not given:
        return "missing signature (EVENT_SIGNING_SECRET is set, so payment events must be signed)"
    if not hmac.compare_digest(given, sign(event, secret)):
        return "bad signature: the HMAC-SHA256 of the event's canonical JSON does not match"
    return None


def check(event: dict[str, Any]) -> None:
    """Rejected unless the event is signed right, when EVENT_SIGNING_SECRET is set."""
    secret = get_settings().event_signing_secret
    if secret is not None:
        problem = verify(event, secret.get_secret_value())
        if problem:
            raise Rejected(problem)
