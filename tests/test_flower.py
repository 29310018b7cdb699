"""Flower, the PyPI package, against the test Redis and a real worker: tasks visible, secrets not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_ENV, _free_port
from tests.fixtures import ROOT, wait_for
from worker.producer import publish_payment, publish_signup
from worker.settings import get_settings

SECRET = "flower-test-signing-secret-0123456789"
AUTH = ("ops", "flower-pass")
AT = "2026-11-20T10:00:00Z"


@pytest.fixture
def flower(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = tmp_path / "flower.log"
    # `litellm-credits flower`: broker and basic auth from settings (compose runs celery flower with the same auth).
    cmd = [sys.executable, "-m", "worker.cli.main", "flower", "--address=127.0.0.1", f"--port={port}"]
    env = {**os.environ, **TEST_ENV, "FLOWER_USER": AUTH[0], "FLOWER_PASSWORD": AUTH[1], "LOG_FORMAT": "json"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"flower exited: {log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{base}/healthcheck", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 60, "flower to answer")
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    assert not cmdline.exists() or AUTH[1] not in cmdline.read_text()  # the password is not in `ps`
    yield base
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]  # LOG_FORMAT=json
    assert any("Visit me at" in line["message"] for line in lines)


def get(url: str, **params: str) -> httpx.Response:
    return httpx.get(url, params=params, auth=AUTH, timeout=10)


def test_flower_shows_worker_and_tasks_with_no_signature(workers, proxy, flower, monkeypatch):
    monkeypatch.setenv("EVENT_SIGNING_SECRET", SECRET)  # the payment is signed in this process
    get_settings.cache_clear()
    workers.start(env={"EVENT_SIGNING_SECRET": SECRET})
    # Flower sees only events sent after it subscribed: wait for the worker's heartbeat first.
    wait_for(lambda: "flower_worker_online{worker=\"w0-" in get(f"{flower}/metrics").text, 60,
             "flower to receive the worker's events")

    signup_id = publish_signup({"user_id": "fred", "email": "fred@example.com", "occurred_at": AT})
    payment_id = publish_payment({"reference": "pay-f1", "user_id": "fred", "amount_minor": 500,
                                  "currency": "USD", "paid_at": AT})

    def done() -> dict | None:
        tasks = get(f"{flower}/api/tasks").json()
        states = [tasks.get(i, {}).get("state") for i in (signup_id, payment_id)]
        return tasks if states == ["SUCCESS", "SUCCESS"] else None

    tasks = wait_for(done, 60, "both tasks SUCCESS in flower")
    assert tasks[signup_id]["name"] == "events.signup" and "fred@example.com" in tasks[signup_id]["kwargs"]
    assert tasks[payment_id]["name"] == "events.payment" and "'signature': '***'" in tasks[payment_id]["kwargs"]
    from worker import signing

    event = {"provider": "paystack", "reference": "pay-f1", "user_id": "fred", "amount_minor": 500,
             "currency": "USD", "paid_at": AT}
    signature = signing.sign(event, SECRET)
    for page in ("/api/tasks", f"/api/task/info/{payment_id}", "/metrics", f"/task/{payment_id}"):
        body = get(f"{flower}{page}").text
        assert signature not in body and SECRET not in body, page

    workers_seen = get(f"{flower}/api/workers", refresh="true").json()
    assert len(workers_seen) == 1
    name, info = next(iter(workers_seen.items()))
    assert name.startswith("w0-") and "events.payment" in info["registered"]
    assert {"signups", "payments", "spend", "periodic"} == {q["name"] for q in info["active_queues"]}

    metrics = get(f"{flower}/metrics").text
    for task in ("events.signup", "events.payment"):
        assert f'flower_events_total{{task="{task}",type="task-succeeded",worker="{name}"}} 1.0' in metrics

    assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401  # basic auth is on
    assert httpx.get(f"{flower}/api/workers", auth=(AUTH[0], "wrong"), timeout=10).status_code == 401


def test_flower_refuses_the_default_password(monkeypatch):
    from typer.testing import CliRunner

    from worker.cli.main import app

    monkeypatch.delenv("FLOWER_PASSWORD", raising=False)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["flower"])
    assert result.exit_code == 1 and result.stderr.startswith("error: FLOWER_PASSWORD is unset or still the default")
