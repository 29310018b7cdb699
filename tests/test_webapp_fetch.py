"""README's web-app block ("Your web app": plain `fetch` against `litellm-credits serve`), run by node
as written against a real `serve` process and a real worker, so the front page cannot drift.

Skipped only where node is not installed (the block needs nothing else: `fetch` is node's own).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import TEST_ENV, _free_port
from tests.readme_blocks import blocks, section
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")
TOKEN = "tok-webapp-3f9a1c7e5b2d4a60"
SECRET = "s" * 40  # a signing secret of 32+ bytes for serve (which signs) and the worker (which checks)
RUNNER = """import { signUp, balance } from "./readme_fetch.mjs";
const [mode, userId] = process.argv.slice(2);
const out = mode === "signup"
  ? { task_id: await signUp(userId, "ada@example.com") }
  : { balance: await balance(userId) };
console.log(JSON.stringify(out));
"""


@pytest.fixture
def webapp(tmp_path: Path) -> Path:
    (js,) = blocks(section("Your web app", level=3), "js")
    assert "fetch(" in js and not any(line.startswith("import ") for line in js.splitlines()), \
        "the block uses plain fetch, no package"
    (tmp_path / "readme_fetch.mjs").write_text(js)
    (tmp_path / "run.mjs").write_text(RUNNER)
    return tmp_path


@pytest.fixture
def serve(tmp_path: Path):
    port = _free_port()
    env = {**os.environ, **TEST_ENV, "API_TOKENS": f"old-token-xyz,{TOKEN}", "EVENT_SIGNING_SECRET": SECRET}
    for unused in ("LITELLM_MASTER_KEY", "KEY_ENCRYPTION_KEY"):  # serve needs neither
        env.pop(unused, None)
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "worker.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as res:
                return res.status == 200
        except OSError:
            return False

    wait_for(healthy, 60, "serve to answer /healthz", interval=0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


def node(webapp: Path, url: str, mode: str, user_id: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CREDITS_URL": url, "CREDITS_API_TOKEN": token}
    return subprocess.run([NODE, "run.mjs", mode, user_id], cwd=webapp, env=env, text=True,
                          capture_output=True, timeout=60)


def result(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_readme_block_signs_a_user_up_and_reads_the_balance_as_decimal_strings(webapp, serve, workers):
    assert result(node(webapp, serve, "balance", "web-fetch-ada")) == {"balance": None}  # unknown user: 404
    task_id = result(node(webapp, serve, "signup", "web-fetch-ada"))["task_id"]
    assert isinstance(task_id, str) and task_id
    workers.start(env={"EVENT_SIGNING_SECRET": SECRET})

    def applied() -> dict | None:
        return result(node(webapp, serve, "balance", "web-fetch-ada"))["balance"]

    try:
        balance = wait_for(applied, 120, "the signup to reach the balance", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; worker log: {workers.output()[-3000:]}") from None
    for field in ("credited_usd", "paid_usd", "spent_usd", "remaining_usd", "savings_usd"):
        assert isinstance(balance[field], str), f"{field} is money: a decimal string, not a JSON number"
    assert Decimal(balance["credited_usd"]) == Decimal(TEST_ENV.get("SIGNUP_CREDIT_USD", "2"))
    assert Decimal(balance["remaining_usd"]) == Decimal(balance["credited_usd"])
    assert Decimal(balance["paid_usd"]) == 0


def test_a_wrong_token_is_refused_and_the_block_says_so(webapp, serve):
    proc = node(webapp, serve, "signup", "web-fetch-eve", token="not-a-token")
    assert proc.returncode != 0 and "signup: 401" in proc.stderr
