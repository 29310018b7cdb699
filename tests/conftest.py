"""Shared fixtures: a real PostgreSQL database and Redis db per run, the stand-in proxy, workers.

Set TEST_DB_NAME / TEST_REDIS_DB to run two suites side by side on one machine.
"""

from __future__ import annotations

import os
import socket

from cryptography.fernet import Fernet


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TEST_DB = os.environ.get("TEST_DB_NAME", "credits_test")
TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "15"))
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PROXY_PORT = _free_port()
MASTER_KEY = "sk-master-test-5f1c2a9e"
TEST_ENV = {
    "DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    + f"/{TEST_DB}",
    "REDIS_URL": f"redis://127.0.0.1:6379/{TEST_REDIS_DB}",
    "LITELLM_BASE_URL": f"http://127.0.0.1:{PROXY_PORT}",
    "LITELLM_MASTER_KEY": MASTER_KEY,
    "KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "KEY_ALIAS_PREFIX": "test-",
    "PROXY_TIMEOUT_S": "2",
    "RETRY_BACKOFF_MAX_S": "2",
    "BROKER_VISIBILITY_TIMEOUT_S": "20",
    "LOG_LEVEL": "INFO",
    "SPEND_SYNC_START": "",
    "CREDITS_ENV_FILE": "",
    # The suite runs unsigned unless a test sets EVENT_SIGNING_SECRET (tests/test_startup.py
    # checks that without this opt-in nothing starts).
    "ALLOW_UNSIGNED_EVENTS": "true",
}
for _name, _value in TEST_ENV.items():
    os.environ[_name] = _value
os.environ.pop("EVENT_SIGNING_SECRET", None)
os.environ.pop("SPEND_SYNC_START", None)
TEST_ENV.pop("SPEND_SYNC_START")

pytest_plugins = ["tests.fixtures"]
