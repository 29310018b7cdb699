"""All configuration, read once from the environment (and `.env`) into one pydantic-settings class."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


@dataclass(frozen=True)
class Threshold:
    """One ALERT_THRESHOLDS entry: a percentage of the credited total ('20%') or USD ('0')."""

    label: str
    percent: Decimal | None = None
    usd: Decimal | None = None

    def level(self, credited: Decimal) -> Decimal:
        return credited * self.percent / 100 if self.percent is not None else self.usd or Decimal(0)

    @classmethod
    def parse(cls, raw: str) -> Threshold:
        try:
            number = Decimal(raw.removesuffix("%"))
        except InvalidOperation:
            raise ValueError(f"{raw!r} is neither a percentage like 20% nor USD like 0") from None
        if not raw.endswith("%"):
            return cls(raw, usd=number)
        if not 0 <= number <= 100:
            raise ValueError(f"{raw!r} must be between 0% and 100%")
        return cls(raw, percent=number)


MIN_SECRET_BYTES = 32


class MissingSetting(RuntimeError):
    """A setting this process uses is absent (others may run without it)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/credits"
    redis_url: str = "redis://127.0.0.1:6379/0"
    litellm_base_url: str = "http://127.0.0.1:4000"
    # Required only where used (worker.proxy, worker.credits.keys, the worker's start): the relay
    # (`serve`) and the producer never call the proxy or decrypt a key.
    litellm_master_key: SecretStr | None = None
    key_encryption_key: SecretStr | None = None
    key_alias_prefix: str = Field(default="credits-", max_length=64)
    signup_credit_usd: Decimal = Field(default=Decimal("2"), ge=0)
    # The signup grant's unspent part expires this many days after the signup; unset, never.
    signup_credit_expires_days: int | None = Field(default=None, gt=0)

    payment_plans: Annotated[list[Decimal], NoDecode] = [Decimal(5), Decimal(15), Decimal(20)]
    credit_multiplier: Decimal = Field(default=Decimal("2"), gt=0)
    # USD only: credit and paid_usd are USD, and no conversion from another currency exists yet.
    # Another currency would have credited its units as dollars.
    plan_currency: str = "USD"
    # Unset (the variable absent): signing off. Set, it must be a real secret (see _real_secret).
    event_signing_secret: SecretStr | None = None
    # With the secret set: unsigned signups are refused too (a forged early signup would set a
    # user's email for good). A signup that carries a signature is checked either way.
    signups_must_be_signed: bool = True
    # Without EVENT_SIGNING_SECRET the worker and `run` refuse to start (anyone who can write to
    # Redis or reach Flower could credit money) unless this says, in so many words, that this is
    # wanted: a local trial, or tests.
    allow_unsigned_events: bool = False

    proxy_timeout_s: float = Field(default=10.0, gt=0)
    task_max_retries: int = Field(default=12, ge=0)
    retry_backoff_max_s: int = Field(default=300, gt=0)
    broker_visibility_timeout_s: int = Field(default=3600, gt=0)
    # A worker silent this long is taken for dead: what it held goes back to its queues.
    broker_heartbeat_s: int = Field(default=15, ge=5)
    max_event_bytes: int = Field(default=64 * 1024, gt=0)
    # Payments waiting while a batch runs go to the pool together, at most this many at a time.
    event_batch_size: int = Field(default=50, ge=1, le=500)

    spend_sync_interval_s: int = Field(default=60, gt=0)
    spend_window_s: int = Field(default=300, gt=0)
    spend_settle_s: int = Field(default=120, ge=0)
    # Windows already read are verified (the source's count against what is stored) this far back.
    spend_verify_s: int = Field(default=86400, ge=0)
    # A spend-log row costing more than this is set aside as a dead letter, not debited. Below
    # 10^9: the ledger's numeric(20, 10) holds under 10^10, and a row under the cap must fit it.
    spend_row_max_usd: Decimal = Field(default=Decimal(1000), gt=0, lt=Decimal(10**9))
    # Small pages through the API: the proxy encodes a whole page in one go on the event loop that
    # serves users' calls, about 0.4 ms a real row, so a page of 5 holds it about 2 ms at a time.
    # Pages are written in larger batches (worker/spend/read.py), so this costs no extra commits.
    spend_page_size: int = Field(default=5, ge=1, le=1000)
    # Spend-log requests all readers together keep in flight on the proxy's API (worker/spend/pace.py).
    spend_api_concurrency: int = Field(default=1, ge=1, le=32)
    # spend_logs rows are kept this many days (at least SPEND_VERIFY_S plus a day), then deleted;
    # the ledger's usage entries and daily_usage keep every day.
    spend_logs_keep_days: int = Field(default=7, ge=1)
    # Not in the future: the cursor starts here, and expiry would settle grants before their spend.
    spend_sync_start: datetime | None = None
    # A read-only DSN to the proxy's own PostgreSQL (or its replica): spend rows are then read from
    # "LiteLLM_SpendLogs" directly instead of through the HTTP API.
    litellm_database_url: str | None = None
    reconcile_interval_s: int = Field(default=300, gt=0)
    # Reconcile reads only the keys changed since its last pass; every key at most this often.
    reconcile_full_s: int = Field(default=86400, gt=0)
    credit_expiry_interval_s: int = Field(default=300, gt=0)
    # Each reconcile audits the running totals of the next accounts (worker/credits/audit.py) until
    # their ledger entries reach this many: the cost of a run stays bounded as the ledger grows.
    audit_entries_per_reconcile: int = Field(default=200_000, ge=1)

    alert_thresholds: Annotated[list[Threshold], NoDecode] = [Threshold("20%", percent=Decimal(20)),
                                                               Threshold("0", usd=Decimal(0))]
    alert_webhook_url: str | None = None
    metrics_port: int | None = None
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    flower_user: str = "admin"
    flower_password: SecretStr = SecretStr("change-me")
    # The HTTP front door (`serve`): provider webhook secrets, and the web app's bearer tokens
    # (comma-separated, so a new one can be added before the old one is removed).
    paystack_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    api_tokens: Annotated[list[SecretStr], NoDecode] = []

    @field_validator("payment_plans", "api_tokens", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [p for p in value.replace(" ", "").split(",") if p]
        return value

    @field_validator("payment_plans")
    @classmethod
    def _positive_plans(cls, value: list[Decimal]) -> list[Decimal]:
        if not value or any(p <= 0 for p in value):
            raise ValueError("must be a comma-separated list of positive prices, e.g. 5,15,20")
        return sorted(value)

    @field_validator("alert_webhook_url", "metrics_port", "spend_sync_start", "litellm_database_url",
                     "signup_credit_expires_days", "litellm_master_key", "key_encryption_key",
                     "paystack_secret_key", "stripe_webhook_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("plan_currency")
    @classmethod
    def _usd_only(cls, value: str) -> str:
        if value.strip().upper() != "USD":
            raise ValueError(f"is {value!r}, but only USD is supported: no conversion to the USD of credit exists "
                             "yet, and another currency's units would be credited as dollars")
        return "USD"

    @field_validator("spend_sync_start")
    @classmethod
    def _not_ahead(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # no offset: UTC
        if value is not None and value > datetime.now(UTC):
            raise ValueError("is in the future; the spend cursor would start past spend not yet read and expire "
                             "credit early (set a past time with an offset, e.g. 2026-01-01T00:00:00Z, or unset it)")
        return value

    @field_validator("event_signing_secret")
    @classmethod
    def _real_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Never read "set but empty" as "off": compose's `${EVENT_SIGNING_SECRET}` with the variable
        # missing from .env gives an empty string, and signing would silently switch off.
        if value is None:
            return None
        secret = value.get_secret_value().strip()
        if not secret:
            raise ValueError("is set but empty or only whitespace; unset it to switch signing off, or set a "
                             f"secret of at least {MIN_SECRET_BYTES} bytes")
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"is {len(secret.encode())} bytes; a signing secret must be at least {MIN_SECRET_BYTES} "
                             "bytes (make one with python -c 'import secrets; print(secrets.token_hex(32))')")
        return value

    @field_validator("alert_thresholds", mode="before")
    @classmethod
    def _parse_thresholds(cls, value: object) -> object:
        # Parsed here, so a bad ALERT_THRESHOLDS stops start-up, not the first payment.
        if isinstance(value, str):
            return [Threshold.parse(p) for p in value.replace(" ", "").split(",") if p]
        return value

    @field_validator("key_encryption_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        from cryptography.fernet import Fernet

        if value is None:
            return None
        try:
            Fernet(value.get_secret_value())
        except Exception:
            raise ValueError(
                "must be a Fernet key (32 url-safe base64 bytes); make one with "
                "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            ) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _psycopg3(cls, value: str) -> str:
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    def required(self, name: str) -> SecretStr:
        """A secret this process needs: its value, or MissingSetting naming it in one line."""
        value = getattr(self, name)
        if value is None:
            raise MissingSetting(f"{name.upper()} is not set; this process needs it")
        return value


def describe_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]).upper() or "settings"
        parts.append(f"{name}: {err['msg']}")
    return "invalid settings: " + "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Load once per process; a missing or malformed setting stops start-up with its name."""
    try:
        # CREDITS_ENV_FILE="" ignores .env (the tests do, so a developer's .env cannot leak in).
        return Settings(_env_file=os.environ.get("CREDITS_ENV_FILE", ".env") or None)
    except ValidationError as exc:
        print(describe_error(exc), file=sys.stderr)
        raise SystemExit(2) from None
