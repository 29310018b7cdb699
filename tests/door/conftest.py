"""A real `litellm-credits serve` (uvicorn over real HTTP) on the test Redis and PostgreSQL.

It runs without LITELLM_MASTER_KEY and KEY_ENCRYPTION_KEY: the relay must need neither.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.chaos.harness import PrivateRedis
from tests.conftest import TEST_ENV, _free_port
from tests.fixtures import ROOT
from tests.waiting import wait_for

SIGNING_SECRET = secrets.token_hex(32)
PAYSTACK_SECRET = "sk_test_" + secrets.token_hex(20)
STRIPE_SECRET = "whsec_" + secrets.token_hex(24)
OLD_TOKEN, NEW_TOKEN = "tok_old_" + secrets.token_hex(16), "tok_new_" + secrets.token_hex(16)
DOOR_ENV = {"EVENT_SIGNING_SECRET": SIGNING_SECRET, "PAYSTACK_SECRET_KEY": PAYSTACK_SECRET,
            "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET, "API_TOKENS": f"{OLD_TOKEN}, {NEW_TOKEN}"}
SECRETS = (SIGNING_SECRET, PAYSTACK_SECRET, STRIPE_SECRET, OLD_TOKEN, NEW_TOKEN)


class Door:
    """One serve process; its log is kept so tests can read what it wrote."""

    def __init__(self, log: Path, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        full = {k: v for k, v in {**os.environ, **TEST_ENV, **DOOR_ENV, **(env or {})}.items()
                if k not in ("LITELLM_MASTER_KEY", "KEY_ENCRYPTION_KEY", *drop)}
        self.proc = subprocess.Popen([sys.executable, "-m", "worker.cli.main", "serve", "--port", str(self.port)],
                                     cwd=ROOT, env=full, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.http = httpx.Client(base_url=self.url, timeout=30)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {log.read_text()[-3000:]}")
            try:
                return self.http.get("/metrics").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 60, "serve to answer")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, database: None) -> Iterator[Door]:
    server = Door(tmp_path_factory.mktemp("door") / "serve.log")
    yield server
    server.stop()


def auth(token: str = NEW_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def paystack_post(door: Door, payload: dict[str, Any] | bytes, secret: str = PAYSTACK_SECRET) -> httpx.Response:
    """POST as Paystack does: the hex HMAC-SHA512 of the raw body in x-paystack-signature."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()
    return door.http.post("/webhooks/paystack", content=body,
                          headers={"content-type": "application/json", "x-paystack-signature": signature})


def stripe_post(door: Door, event: dict[str, Any], secret: str = STRIPE_SECRET, at: int | None = None
                ) -> httpx.Response:
    """POST as Stripe does: Stripe-Signature t=<unix>,v1=<hex HMAC-SHA256 of "t.body">, made by the
    official package's own signer."""
    import stripe

    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=at)
    return door.http.post("/webhooks/stripe", content=body.encode(),
                          headers={"content-type": "application/json", "stripe-signature": header})


def queued(queue: str = "payments") -> list[dict[str, Any]]:
    """(task name, event) of every message on a queue's Redis list, oldest first."""
    client = redis.Redis.from_url(TEST_ENV["REDIS_URL"])
    out = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        message = json.loads(raw)
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        out.append({"task": message["headers"]["task"], "event": kwargs["event"]})
    return out


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of our own, to stop and start (never the shared one)."""
    server = PrivateRedis(tmp_path / "redis").start()
    yield server
    server.kill()
