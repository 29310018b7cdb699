"""Table definitions. The schema itself is created by Alembic migrations in migrations/."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, DateTime, Integer, Numeric, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

USD = Numeric(20, 10)


class Base(DeclarativeBase):
    pass


class Account(Base):
    """One per user: who they are on the proxy. Money never lives here, only in the ledger."""

    __tablename__ = "accounts"
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    email: Mapped[str | None] = mapped_column(Text)
    key_alias: Mapped[str] = mapped_column(Text, unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_encrypted: Mapped[str] = mapped_column(Text)
    key_status: Mapped[str] = mapped_column(String(16), default="pending")
    budget_pushed_usd: Mapped[Decimal | None] = mapped_column(USD)
    budget_pushed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    push_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LedgerEntry(Base):
    """Append-only (a trigger refuses UPDATE and DELETE). Each row is one fact, keyed for idempotency."""

    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str] = mapped_column(Text, unique=True)
    grant_key: Mapped[str | None] = mapped_column(Text)
    credit_usd: Mapped[Decimal] = mapped_column(USD, default=Decimal(0))
    paid_usd: Mapped[Decimal] = mapped_column(USD, default=Decimal(0))
    spent_usd: Mapped[Decimal] = mapped_column(USD, default=Decimal(0))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    details: Mapped[dict | None] = mapped_column(JSONB)
    # On a grant's first entry: when its unspent part leaves (worker.credits.expiry); None, never.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    task_name: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="open")
    first_failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SpendLog(Base):
    """One proxy spend-log row, stored once by request_id; user_id is set only for our keys."""

    __tablename__ = "spend_logs"
    request_id: Mapped[str] = mapped_column(Text, primary_key=True)
    api_key: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(Text)
    spend: Mapped[Decimal] = mapped_column(USD)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str | None] = mapped_column(String(32))
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    synced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SpendSyncRun(Base):
    """One spend sync run: the range it covered and what it found, for the operator."""

    __tablename__ = "spend_sync_runs"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    window_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pages: Mapped[int] = mapped_column(Integer, default=0)
    rows_seen: Mapped[int] = mapped_column(BigInteger, default=0)
    inserted: Mapped[int] = mapped_column(BigInteger, default=0)
    debited: Mapped[int] = mapped_column(BigInteger, default=0)
    skipped: Mapped[int] = mapped_column(BigInteger, default=0)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="running")
    error: Mapped[str | None] = mapped_column(Text)


class BalanceAlert(Base):
    """Per account and threshold: armed until it fires, re-armed when a top-up lifts the balance above it."""

    __tablename__ = "balance_alerts"
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    threshold: Mapped[str] = mapped_column(String(32), primary_key=True)
    armed: Mapped[bool] = mapped_column(default=True)  # the annotation alone makes it boolean
    fired_count: Mapped[int] = mapped_column(Integer, default=0)
    last_fired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_remaining_usd: Mapped[Decimal | None] = mapped_column(USD)
    pending: Mapped[dict | None] = mapped_column(JSONB(none_as_null=True))  # None is SQL NULL, not JSON null


class FiredAlert(Base):
    """A balance alert as it went onto the stream; ops.alert_webhook POSTs it by id, never by content."""

    __tablename__ = "fired_alerts"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    alert_id: Mapped[str] = mapped_column(Text, unique=True)
    user_id: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict] = mapped_column(JSONB)
    delivered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    webhook_posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PromoCode(Base):
    """A promo code, known only by the SHA-256 of its canonical form; `uses` counts redemptions."""

    __tablename__ = "promo_codes"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(Text)
    amount_usd: Mapped[Decimal] = mapped_column(USD)
    max_uses: Mapped[int | None] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    credit_expires_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
