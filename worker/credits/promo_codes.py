"""Promo codes: made here, shown once, stored only as a hash; listed with their uses and state.

A code is a prefix and 80 random bits in base32 (`WELCOME-K3QX-7B2M-PD5A-ZW4N`). What is stored
is the SHA-256 of its canonical form (upper case, no spaces or hyphens): with that much entropy
a plain hash cannot be reversed, and a user who types it in lower case or without the hyphens
still matches.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.credits import ledger
from worker.models import PromoCode

PREFIX = re.compile(r"^[A-Za-z0-9]{1,16}$")
RANDOM_BYTES = 10  # 80 bits: 16 base32 characters


def canonical(code: str) -> str:
    return re.sub(r"[\s-]", "", code).upper()


def code_hash(code: str) -> str:
    return hashlib.sha256(canonical(code).encode()).hexdigest()


def new_code(prefix: str) -> str:
    body = base64.b32encode(secrets.token_bytes(RANDOM_BYTES)).decode()
    return "-".join([prefix.upper(), *(body[i:i + 4] for i in range(0, len(body), 4))])


def hint(code: str) -> str:
    """What `codes list` shows of a code: its prefix and its last four characters."""
    return f"{code.split('-', 1)[0]}-...{code[-4:]}"


def create_codes(session: Session, *, amount_usd: Decimal, count: int, prefix: str = "PROMO",
                 expires_at: datetime | None = None, max_uses: int | None = None,
                 credit_expires_days: int | None = None) -> list[tuple[int, str]]:
    """`count` new codes worth `amount_usd` each; returns (id, code) pairs, the only time the
    codes themselves exist outside the user's hands."""
    if not PREFIX.match(prefix):
        raise ValueError(f"prefix {prefix!r} must be 1-16 letters or digits")
    if amount_usd <= 0:
        raise ValueError("the amount must be positive")
    if expires_at is not None and expires_at.tzinfo is None:
        raise ValueError("the expiry must carry a UTC offset, e.g. 2026-12-31T23:59:59Z")
    if max_uses is not None and max_uses < 1:
        raise ValueError("max uses must be at least 1")
    if credit_expires_days is not None and credit_expires_days < 1:
        raise ValueError("credit expiry days must be at least 1")
    codes = [new_code(prefix) for _ in range(count)]
    rows = [PromoCode(code_hash=code_hash(c), hint=hint(c), amount_usd=ledger.money(amount_usd),
                      max_uses=max_uses, expires_at=expires_at, credit_expires_days=credit_expires_days)
            for c in codes]
    session.add_all(rows)
    session.flush()
    return [(row.id, code) for row, code in zip(rows, codes, strict=True)]


def state(code: PromoCode, now: datetime) -> str:
    if code.expires_at is not None and code.expires_at <= now:
        return "expired"
    if code.max_uses is not None and code.uses >= code.max_uses:
        return "used up"
    return "active"


@dataclass(frozen=True)
class CodeRow:
    id: int
    hint: str
    amount_usd: Decimal
    uses: int
    max_uses: int | None
    expires_at: datetime | None
    credit_expires_days: int | None
    state: str
    created_at: datetime


def list_codes(session: Session) -> list[CodeRow]:
    now = datetime.now(UTC)
    return [CodeRow(c.id, c.hint, c.amount_usd, c.uses, c.max_uses, c.expires_at, c.credit_expires_days,
                    state(c, now), c.created_at)
            for c in session.execute(select(PromoCode).order_by(PromoCode.id.desc())).scalars()]
