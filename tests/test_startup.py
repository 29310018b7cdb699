"""The worker (`celery -A worker.app worker`, as compose runs it) and `litellm-credits run` refuse
to start, with one line naming what to fix, when they could only fail; opting out of signing
starts them with a warning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import MASTER_KEY, TEST_ENV
from tests.fixtures import Workers

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKER = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", "signups", "--without-mingle",
          "--without-gossip"]
RUN = [str(BIN / "litellm-credits"), "run", "--concurrency", "1"]


def refusal(cmd: list[str], **env: str | None) -> str:
    """The one line a process that must refuse to start prints; it must exit 2, not start."""
    full = {**os.environ, **TEST_ENV, **{k: v for k, v in env.items() if v is not None}}
    for name in (k for k, v in env.items() if v is None):
        full.pop(name, None)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # it started (with its pool and beat): the test fails below
        _, stderr = proc.communicate()
    lines = stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (cmd, proc.returncode, stderr)
    assert "Traceback" not in stderr
    return lines[0]


def test_without_a_signing_secret_nothing_starts_unless_unsigned_is_allowed(proxy, redis_client):
    for cmd in (WORKER, RUN):
        line = refusal(cmd, ALLOW_UNSIGNED_EVENTS=None, EVENT_SIGNING_SECRET=None)
        assert line.startswith("error: EVENT_SIGNING_SECRET is not set") and "ALLOW_UNSIGNED_EVENTS=true" in line
    for cmd in (WORKER, RUN):  # "false" is no opt-in
        assert "EVENT_SIGNING_SECRET" in refusal(cmd, ALLOW_UNSIGNED_EVENTS="false", EVENT_SIGNING_SECRET=None)


def test_with_the_opt_in_the_worker_starts_and_says_loudly_that_events_are_unsigned(workers: Workers):
    workers.start(env={"LITELLM_MASTER_KEY": MASTER_KEY, "FLOWER_PASSWORD": "change-me"})
    warned = [line for line in workers.output().splitlines() if " WARNING " in line]
    # TEST_ENV carries ALLOW_UNSIGNED_EVENTS=true and no secret.
    assert any("events are NOT signed (ALLOW_UNSIGNED_EVENTS=true)" in line for line in warned), warned
    assert any("FLOWER_PASSWORD: the repository's published sample value" in line for line in warned), warned


def test_a_master_key_the_proxy_refuses_stops_the_start_before_any_event_is_taken(proxy, redis_client):
    from worker.producer import publish_signup

    publish_signup({"user_id": "waiting", "occurred_at": "2026-11-20T10:00:00Z"})
    for cmd in (WORKER, RUN):
        line = refusal(cmd, LITELLM_MASTER_KEY="sk-not-the-master-key")
        assert line == "error: the proxy refuses LITELLM_MASTER_KEY (HTTP 401); set it to the proxy's master key"
    assert redis_client.llen("signups") == 1  # still queued: not taken, not dead-lettered
    assert "sk-not-the-master-key" not in line
    # Two things wrong: still one line, naming both.
    line = refusal(WORKER, LITELLM_MASTER_KEY="sk-not-the-master-key", ALLOW_UNSIGNED_EVENTS=None)
    assert "LITELLM_MASTER_KEY" in line and "; also: EVENT_SIGNING_SECRET is not set" in line


def test_an_unreachable_or_unmigrated_database_stops_the_worker(proxy, unmigrated):
    line = refusal(WORKER, DATABASE_URL="postgresql+psycopg://postgres:secret-pw@127.0.0.1:1/credits")
    assert "cannot connect to postgresql+psycopg://postgres:***@127.0.0.1:1/credits" in line
    assert "check DATABASE_URL" in line
    line = refusal(WORKER, DATABASE_URL=unmigrated)
    assert line.endswith("has no tables of ours (never migrated); run `litellm-credits migrate`")
    line = refusal(RUN, DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/credits")
    assert line.startswith("error: cannot migrate") and "check DATABASE_URL" in line


def test_a_missing_worker_secret_stops_the_worker_naming_it(proxy):
    line = refusal(WORKER, KEY_ENCRYPTION_KEY=None)
    assert line == "invalid settings: KEY_ENCRYPTION_KEY is not set; the worker needs it"


def test_a_proxy_that_is_down_does_not_stop_the_worker(workers: Workers, proxy):
    proxy.stop()  # the fixture starts it again; tasks would retry until it is back
    workers.start()
    assert "cannot reach" in workers.output() and "tasks wait for it" in workers.output()
