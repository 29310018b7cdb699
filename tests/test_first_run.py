"""./scripts/run on a fresh clone: it writes .env with freshly generated secrets, then stops with
the list of what must be set, unless the environment has it; the second run starts."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from tests.conftest import MASTER_KEY, TEST_ENV
from tests.waiting import wait_for
from worker.preflight.config import PUBLISHED

ROOT = Path(__file__).resolve().parent.parent
# uv itself is not run here: `uv sync` would re-point the shared environment's editable install
# at the copy. This stand-in runs the command from the environment the tests run in.
UV = """#!/bin/sh
[ "$1" = sync ] && exit 0
shift; [ "$1" = --frozen ] && shift
cmd=$1; shift
exec "$VENV_BIN/$cmd" "$@"
"""


def fresh_clone(tmp: Path) -> tuple[Path, dict[str, str]]:
    clone = tmp / "clone"
    shutil.copytree(ROOT / "scripts", clone / "scripts")
    shutil.copy(ROOT / ".env.example", clone / ".env.example")
    uv = tmp / "home" / ".local" / "bin" / "uv"
    uv.parent.mkdir(parents=True)
    uv.write_text(UV)
    uv.chmod(0o755)
    env = {"PATH": f"{uv.parent}:/usr/bin:/bin", "HOME": str(tmp / "home"),
           "VENV_BIN": str(Path(sys.executable).parent)}
    return clone, env


def settings_of(env_file: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+)=(.*)$", env_file.read_text(), flags=re.M))


def start_run(clone: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen([str(clone / "scripts" / "run"), "--concurrency", "1"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc


def runs_until_ready(clone: Path, env: dict[str, str], log: Path) -> str:
    proc = start_run(clone, env, log)
    try:
        wait_for(lambda: " ready." in log.read_text() or proc.poll() is not None, 90, "run to be ready")
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    return log.read_text()


def test_the_first_run_writes_fresh_secrets_and_lists_what_to_set_then_the_second_starts(proxy, tmp_path):
    clone, env = fresh_clone(tmp_path)
    first = subprocess.run([str(clone / "scripts" / "run")], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "LITELLM_BASE_URL" in first.stdout and "LITELLM_MASTER_KEY" in first.stdout
    written = settings_of(clone / ".env")
    Fernet(written["KEY_ENCRYPTION_KEY"])  # a valid key
    assert re.fullmatch(r"[0-9a-f]{64}", written["EVENT_SIGNING_SECRET"])
    assert written["POSTGRES_PASSWORD"] and written["FLOWER_PASSWORD"]
    for name, samples in PUBLISHED.items():
        assert written.get(name.upper()) not in samples
    assert (clone / ".env").stat().st_mode & 0o077 == 0  # the owner's only

    other, other_env = fresh_clone(tmp_path / "other")
    subprocess.run([str(other / "scripts" / "run")], env=other_env, capture_output=True, timeout=60)
    assert settings_of(other / ".env")["EVENT_SIGNING_SECRET"] != written["EVENT_SIGNING_SECRET"]  # generated

    # The operator fills in the proxy (and, here, the test database and Redis); the second run starts,
    # signed, and leaves the secrets alone.
    text = (clone / ".env").read_text()
    for name in ("LITELLM_BASE_URL", "LITELLM_MASTER_KEY", "DATABASE_URL", "REDIS_URL"):
        value = MASTER_KEY if name == "LITELLM_MASTER_KEY" else TEST_ENV[name]
        text = re.sub(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
    (clone / ".env").write_text(text)
    output = runs_until_ready(clone, env, tmp_path / "second.log")
    assert "event signing is on" in output
    assert settings_of(clone / ".env")["EVENT_SIGNING_SECRET"] == written["EVENT_SIGNING_SECRET"]


def test_the_first_run_starts_at_once_when_the_environment_names_the_proxy(proxy, tmp_path):
    clone, env = fresh_clone(tmp_path)
    env.update(LITELLM_BASE_URL=TEST_ENV["LITELLM_BASE_URL"], LITELLM_MASTER_KEY=MASTER_KEY,
               DATABASE_URL=TEST_ENV["DATABASE_URL"], REDIS_URL=TEST_ENV["REDIS_URL"])
    output = runs_until_ready(clone, env, tmp_path / "first.log")
    assert "wrote " in output and "before it can start" not in output
