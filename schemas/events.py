"""The messages producers enqueue: one JSON object per event, passed as the task's `event` kwarg."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

UserId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@:\-]+$")
]
Reference = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]
Provider = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z0-9_\-]+$")]


def _upper_currency(value: str) -> str:
    if len(value) != 3 or not value.isascii() or not value.isalpha():
        raise ValueError("must be a 3-letter ISO 4217 code such as USD")
    return value.upper()


Currency = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$"), AfterValidator(_upper_currency)]

# Every event time must convert to a UTC instant PostgreSQL and Python both hold: year 9999 at
# -01:00 is accepted by a datetime and overflows in UTC, and its refunds would then fail forever.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
AHEAD = timedelta(days=1)  # producers' clocks may run ahead of ours, but not by days


def _sane_time(value: datetime) -> datetime:
    latest = datetime.now(UTC) + AHEAD
    if not EARLIEST <= value <= latest:
        raise ValueError(f"must be between {EARLIEST:%Y-%m-%dT%H:%M:%SZ} and one day after the worker's clock "
                         f"({latest:%Y-%m-%dT%H:%M:%SZ}), once converted to UTC")
    return value


EventTime = Annotated[AwareDatetime, AfterValidator(_sane_time), Field(
    description="ISO 8601 with an offset; from 2000-01-01T00:00:00Z to one day after the worker's clock.")]


def _json_integer(value: Any) -> Any:
    # Strict: "500" and true are not amounts, and 500.0 would pass here but sign differently in
    # each language (Python's canonical JSON writes 500.0, JavaScript's 500).
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a JSON integer such as 500 (no quotes, no fraction or exponent: not 500.0, "
                         f"\"500\" or true); got {type(value).__name__}")
    return value


MinorUnits = Annotated[int, Field(
    gt=0, lt=10**15, description="A JSON integer literal in minor units (500 = 5.00 USD): no quotes, "
                                 "no fraction or exponent; 500.0, \"500\" and true are refused."),
    BeforeValidator(_json_integer)]

HEX_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")
SIGNATURE_SHAPE = "64 hexadecimal digits (the hex HMAC-SHA256 of the event's canonical JSON), either case"


def signature_problem(signature: str) -> str | None:
    """Why a signature is not even shaped like one, or None. Checked before any comparison, so a
    non-ASCII signature gets a reason rather than hmac.compare_digest's TypeError."""
    if HEX_SIGNATURE.fullmatch(signature):
        return None
    if not signature.isascii():
        return f"must be {SIGNATURE_SHAPE}; it holds non-ASCII characters"
    return f"must be {SIGNATURE_SHAPE}; got {len(signature)} characters" + (
        ", not all of them hexadecimal" if len(signature) == 64 else "")


def _signature(value: str) -> str:
    problem = signature_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Signature = Annotated[str, AfterValidator(_signature), Field(
    description=f"{SIGNATURE_SHAPE}; see docs/events.md, Signing.", json_schema_extra={"pattern": "^[0-9a-fA-F]{64}$"})]


class Event(BaseModel):
    # Unknown fields are an error, not silently ignored: a typo in a producer must be seen.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: object) -> object:
        # PostgreSQL text cannot hold NUL; refuse it here, naming the field, rather than fail
        # inside the ledger write. (Lone surrogates are already refused by pydantic's str.)
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("contains a NUL character")
        return value


# Idempotency keys: the ledger entry each event writes is unique by these, and every log line about
# the event carries the same key. The raw-field forms serve log context before validation.
def signup_key(user_id: object) -> str:
    return f"signup:{user_id}"


def payment_key(provider: object, reference: object) -> str:
    return f"payment:{provider}:{reference}"


def refund_key(provider: object, refund_reference: object) -> str:
    return f"refund:{provider}:{refund_reference}"


def adjustment_key(reference: object) -> str:
    return f"adjustment:{reference}"


def promo_key(code_id: object, user_id: object) -> str:
    """One promo credit per (code, user): the code by its row id, never its text."""
    return f"promo:{code_id}:{user_id}"


class SignupEvent(Event):
    user_id: UserId
    email: Annotated[str, StringConstraints(max_length=320)] | None = None
    occurred_at: EventTime
    signature: Signature | None = None

    @property
    def idempotency_key(self) -> str:
        return signup_key(self.user_id)


class PaymentEvent(Event):
    provider: Provider = "paystack"
    reference: Reference
    user_id: UserId
    amount_minor: MinorUnits
    currency: Currency
    paid_at: EventTime
    plan: Annotated[str, StringConstraints(max_length=64)] | None = None
    signature: Signature | None = None

    @property
    def idempotency_key(self) -> str:
        return payment_key(self.provider, self.reference)


class RefundEvent(Event):
    provider: Provider = "paystack"
    refund_reference: Reference
    payment_reference: Reference
    # Optional: a refund naming no user is its payment's user's (Paystack's refund.processed
    # carries none). Named, it must be the payment's user.
    user_id: UserId | None = None
    amount_minor: MinorUnits
    currency: Currency
    refunded_at: EventTime
    signature: Signature | None = None

    @property
    def idempotency_key(self) -> str:
        return refund_key(self.provider, self.refund_reference)

    @property
    def payment_key(self) -> str:
        return payment_key(self.provider, self.payment_reference)


# A decimal string, never a JSON number: a float cannot carry an exact amount. At most 10 places
# before and after the point, what numeric(20, 10) holds.
DecimalString = Annotated[str, StringConstraints(pattern=r"^-?[0-9]{1,10}(\.[0-9]{1,10})?$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=500)]


# An operator's correction: credit added (positive) or taken back (negative). (Comments, not
# docstrings: a docstring would replace the description schemas/export.py writes.)
class AdjustmentEvent(Event):
    user_id: UserId
    amount_usd: DecimalString
    reason: Text
    reference: Reference
    actor: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    occurred_at: EventTime
    signature: Signature | None = None

    @field_validator("amount_usd")
    @classmethod
    def _not_zero(cls, value: str) -> str:
        if Decimal(value) == 0:
            raise ValueError("must not be zero")
        return value

    @property
    def amount(self) -> Decimal:
        return Decimal(self.amount_usd)

    @property
    def idempotency_key(self) -> str:
        return adjustment_key(self.reference)


# A user typed a promo code into the web app. Signed like every other event: a redemption credits
# whoever it names. redeemed_at is the producer's claim, recorded only: the worker's own clock
# decides whether the code has expired and dates the credit.
class RedeemEvent(Event):
    user_id: UserId
    code: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    redeemed_at: EventTime
    signature: Signature | None = None


EVENT_MODELS: dict[str, type[Event]] = {
    "signup": SignupEvent,
    "payment": PaymentEvent,
    "refund": RefundEvent,
    "adjustment": AdjustmentEvent,
    "redeem": RedeemEvent,
}


def describe(exc: Exception) -> str:
    """One line naming each bad field and what is wrong with it."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for err in errors():
        field = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{field}: {err['msg']}")
    return "; ".join(parts)

