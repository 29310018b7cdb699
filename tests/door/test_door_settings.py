"""Each process requires only the settings it uses; nothing outside worker/door imports the door."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import TEST_ENV, _free_port
from tests.door.conftest import DOOR_ENV
from tests.fixtures import ROOT
from tests.test_layout import _imports, _modules


def run(cmd: list[str], drop: tuple[str, ...], extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in {**os.environ, **TEST_ENV, **DOOR_ENV, **(extra or {})}.items() if k not in drop}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_the_producer_publishes_without_the_proxy_or_encryption_keys():
    done = run([sys.executable, "-c", "from worker.producer import publish_signup; print(publish_signup("
                "{'user_id': 'ada', 'occurred_at': '2026-11-20T10:00:00Z'}))"],
               drop=("LITELLM_MASTER_KEY", "KEY_ENCRYPTION_KEY"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_the_worker_refuses_to_start_without_the_master_key_naming_it():
    done = run([sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", "signups", "--without-mingle",
                "--without-gossip"], drop=("LITELLM_MASTER_KEY",))
    assert done.returncode != 0
    assert "LITELLM_MASTER_KEY is not set" in done.stderr and "Traceback" not in done.stderr


def test_serve_refuses_to_start_without_a_signing_secret_naming_it():
    done = run([sys.executable, "-m", "worker.cli.main", "serve", "--port", str(_free_port())],
               drop=("EVENT_SIGNING_SECRET", "ALLOW_UNSIGNED_EVENTS"))
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "EVENT_SIGNING_SECRET" in line


def test_nothing_outside_the_door_imports_it_but_its_command():
    known = _modules()
    importers = sorted(name for name, path in known.items()
                       if not name.startswith("worker.door") and name != "worker.cli.serve"
                       and any(i == "worker.door" or i.startswith("worker.door.") for i in _imports(path, known)))
    assert importers == []


def test_with_unsigned_events_allowed_serve_starts_warning_and_queues_them_unsigned(tmp_path):
    from tests.door.conftest import Door, auth, queued

    door = Door(tmp_path / "serve.log", {"ALLOW_UNSIGNED_EVENTS": "true"}, drop=("EVENT_SIGNING_SECRET",))
    try:
        answer = door.http.post("/v1/events/signup", headers=auth(),
                                json={"user_id": "ada", "occurred_at": "2026-11-20T10:00:00Z"})
        assert answer.status_code == 202
        (message,) = queued("signups")
        assert "signature" not in message["event"]
        assert "queued UNSIGNED" in door.output()
    finally:
        door.stop()
