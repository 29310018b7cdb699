"""docs/dashboard.md's revealKey block, run by node against keys the worker made, so the doc cannot drift.

The block is extracted from docs/dashboard.md ("Showing a user their key") into tests/webapp/, whose
package.json and package-lock.json pin pg and fernet-nodejs; `npm ci` installs them from the
registry when they are missing. Skipped only where node is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.signup import signup
from tests.conftest import TEST_ENV
from tests.readme_blocks import DASHBOARD, KEY_SECTION, blocks, section
from tests.standin.proxy import token
from worker.credits import keys
from worker.credits.accounts import ensure_account
from worker.db import session_scope
from worker.models import Account

WEBAPP = Path(__file__).resolve().parent / "webapp"
NODE, NPM = shutil.which("node"), shutil.which("npm")
pytestmark = pytest.mark.skipif(NODE is None or NPM is None, reason="node and npm are not installed")
USER = "web-ada"
ENV = {**os.environ, "DATABASE_URL": TEST_ENV["DATABASE_URL"].replace("+psycopg", ""),
       "KEY_ENCRYPTION_KEY": TEST_ENV["KEY_ENCRYPTION_KEY"]}


@pytest.fixture(scope="module")
def webapp() -> Path:
    (js,) = blocks(section(KEY_SECTION, DASHBOARD), "js")
    assert "export async function revealKey(client, userId, fernetKey)" in js
    imports = {line.split(" from ")[-1].strip('";') for line in js.splitlines() if line.startswith("import ")}
    assert imports == {"fernet-nodejs"}, "the block uses pg's client and one Fernet package, nothing else"
    (WEBAPP / "readme.mjs").write_text(js)
    installed = WEBAPP / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < (WEBAPP / "package-lock.json").stat().st_mtime:
        subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=WEBAPP, check=True, timeout=240,
                       capture_output=True)
    return WEBAPP


def node(webapp: Path, mode: str, user_id: str = USER) -> subprocess.Popen[str]:
    return subprocess.Popen([NODE, "run.mjs", mode, user_id], cwd=webapp, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def key_of(proc: subprocess.Popen[str]) -> str | None:
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    return json.loads(out)["key"]


def signup_now() -> None:
    signup.apply(kwargs={"event": {"user_id": USER, "email": "ada@example.com", "occurred_at": "2026-12-03T07:00:00Z"}})


def on_proxy(proxy) -> str:
    found = proxy.key_by_alias(f"test-{USER}")
    assert found is not None
    return found["token"]


def test_reveal_key_is_null_until_active_then_the_key_on_the_proxy(webapp, proxy):
    assert key_of(node(webapp, "reveal")) is None  # signup not consumed yet: no account
    with session_scope() as session:
        ensure_account(session, USER)
    assert key_of(node(webapp, "reveal")) is None  # made, encrypted, not yet on the proxy
    signup_now()
    key = key_of(node(webapp, "reveal"))
    assert key is not None and key.startswith("sk-")
    assert token(key) == on_proxy(proxy)
    with session_scope() as session:
        assert key == keys.decrypt(session.get(Account, USER).key_encrypted)


def test_wait_for_key_returns_once_the_worker_made_it(webapp, proxy):
    waiting = node(webapp, "wait")
    signup_now()
    key = key_of(waiting)
    assert key is not None and token(key) == on_proxy(proxy)
