"""The settings themselves: valid, the worker's secrets present, signing on (or explicitly off),
no secret left at a value this repository has published as a sample."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from pydantic import ValidationError

from worker.preflight.findings import Finding, fail, ok, warn
from worker.settings import Settings, describe_error

# Values that were, or are, printed in this repository's samples (.env.example, compose, docs):
# anyone can read them, so they protect nothing.
PUBLISHED = {
    "litellm_master_key": {"sk-master-1234"},
    "key_encryption_key": {"8qH7U0Gd1sC3q7vO4oQyq0gXvYxQm8kQm3Kc6a9bF1E="},
    "flower_password": {"change-me"},
}
PUBLISHED_DB_PASSWORDS = {"postgres"}
# What the worker cannot run without (other processes, such as `serve`, may).
WORKER_SECRETS = ("litellm_master_key", "key_encryption_key")
SIGNING_OFF = ("events are NOT signed (ALLOW_UNSIGNED_EVENTS=true): anyone who can write to Redis or reach "
               "Flower can credit money; set EVENT_SIGNING_SECRET")


def load() -> Settings | Finding:
    """The settings as a process would read them, or the finding that says why they are invalid."""
    try:
        return Settings(_env_file=os.environ.get("CREDITS_ENV_FILE", ".env") or None)
    except ValidationError as exc:
        return fail("settings", describe_error(exc))


def missing_secrets(s: Settings) -> list[str]:
    return [name.upper() for name in WORKER_SECRETS if getattr(s, name) is None]


def settings(s: Settings) -> Finding:
    missing = missing_secrets(s)
    if missing:
        return fail("settings", f"{' and '.join(missing)} not set; the worker needs "
                                f"{'them' if len(missing) > 1 else 'it'}")
    return ok("settings", "valid")


def signing_problem(s: Settings) -> str | None:
    """Why the worker must not start as set up, signing-wise; None when it may."""
    if s.event_signing_secret is None and not s.allow_unsigned_events:
        return ("EVENT_SIGNING_SECRET is not set: without it anyone who can write to Redis can credit money; "
                "set it (python -c 'import secrets; print(secrets.token_hex(32))'), or ALLOW_UNSIGNED_EVENTS=true "
                "to run unsigned on purpose")
    return None


def signing(s: Settings) -> Finding:
    problem = signing_problem(s)
    if problem:
        return fail("signing", problem)
    if s.event_signing_secret is None:
        return warn("signing", SIGNING_OFF)
    signups = "required" if s.signups_must_be_signed else "checked when present (SIGNUPS_MUST_BE_SIGNED=false)"
    return ok("signing", f"on (EVENT_SIGNING_SECRET set); signup signatures {signups}")


def samples(s: Settings) -> Finding:
    found = [name.upper() for name, values in PUBLISHED.items()
             if (name != "flower_password" or name in s.model_fields_set)  # its default is refused by `flower`
             and getattr(s, name) is not None and getattr(s, name).get_secret_value() in values]
    if urlsplit(s.database_url).password in PUBLISHED_DB_PASSWORDS:
        found.append("the password in DATABASE_URL")
    if found:
        return warn("secrets", f"{', '.join(found)}: the repository's published sample value; anyone can read "
                               "it, set your own (./scripts/run generates the secrets of a new .env)")
    return ok("secrets", "none is a published sample value")
