"""HMAC-SHA256 over an event's canonical JSON, so that write access to Redis cannot mint credit.

Canonical JSON: the event object as sent, without its `signature` field, keys sorted at every
level, no whitespace (`,` and `:` separators), non-ASCII characters as raw UTF-8. In Node:
`hmacSha256Hex(secret, JSON.stringify(sortKeysDeep(eventWithoutSignature)))`. The signature is
64 hexadecimal digits, in either case (hex is case-insensitive; Node and Python write lowercase).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.events import signature_problem
from worker.errors import Rejected
from worker.settings import get_settings


def canonical(event: dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in event.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(event: dict[str, Any], secret: str) -> str:
    return hmac.new(secret.encode(), canonical(event), hashlib.sha256).hexdigest()


PAYMENTS_SIGNED = "EVENT_SIGNING_SECRET is set, so payments, refunds, adjustments and redemptions must be signed"
SIGNUPS_SIGNED = "EVENT_SIGNING_SECRET is set and SIGNUPS_MUST_BE_SIGNED is on, so signups must be signed"


def verify(event: dict[str, Any], secret: str, why: str = PAYMENTS_SIGNED) -> str | None:
    """None when the signature is good, else the reason it is not."""
    given = event.get("signature")
    if not isinstance(given, str) or not given:
        return f"missing signature ({why})"
    problem = signature_problem(given)
    if problem:
        return f"bad signature: {problem}"
    try:
        expected = sign(event, secret)
    except (TypeError, ValueError):  # a value JSON cannot hold (kombu decodes tagged objects)
        return "bad signature: the event holds a value that has no canonical JSON form"
    if not hmac.compare_digest(given.lower(), expected):
        return "bad signature: the HMAC-SHA256 of the event's canonical JSON does not match"
    return None


UNSIGNED_REFUSED = ("EVENT_SIGNING_SECRET is not set and ALLOW_UNSIGNED_EVENTS is not true: no event is applied "
                    "unsigned")


def _secret() -> str | None:
    """The signing secret; None only where ALLOW_UNSIGNED_EVENTS=true says so. Start-up refuses
    that configuration already; this is the same rule where an event is applied."""
    s = get_settings()
    if s.event_signing_secret is not None:
        return s.event_signing_secret.get_secret_value()
    if not s.allow_unsigned_events:
        raise Rejected(UNSIGNED_REFUSED)
    return None


def check(event: dict[str, Any]) -> None:
    """Rejected unless a payment, refund, adjustment or redemption is signed right (or signing is
    explicitly off)."""
    secret = _secret()
    if secret is not None:
        problem = verify(event, secret)
        if problem:
            raise Rejected(problem)


def check_signup(event: dict[str, Any]) -> None:
    """With EVENT_SIGNING_SECRET set, a signup's signature is checked when it carries one, and
    required unless SIGNUPS_MUST_BE_SIGNED is off."""
    secret = _secret()
    if secret is None:
        return
    if event.get("signature") is None and not get_settings().signups_must_be_signed:
        return
    problem = verify(event, secret, SIGNUPS_SIGNED)
    if problem:
        raise Rejected(problem)


Event = TypeVar("Event", bound=BaseModel)


def parse_signed(raw_events: Sequence[dict[str, Any]], model: type[Event], check_one: Callable[[dict[str, Any]], None]
                 ) -> tuple[list[Exception | None], dict[int, Event]]:
    """A batch's events validated and their signatures checked: (per event the reason it is
    refused, or None), and the accepted ones by their place in the batch."""
    outcomes: list[Exception | None] = [None] * len(raw_events)
    parsed: dict[int, Event] = {}
    for i, raw in enumerate(raw_events):
        try:
            event = model.model_validate(raw)
            check_one(raw)
            parsed[i] = event
        except (ValidationError, Rejected) as exc:
            outcomes[i] = exc
    return outcomes, parsed
