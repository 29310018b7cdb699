"""`litellm-credits check`, and the worker's start, against the real LiteLLM proxy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import TEST_ENV
from worker.cli.main import app
from worker.preflight.proxy import TESTED_VERSION

ROOT = Path(__file__).resolve().parent.parent.parent
REAL_DB = os.environ.get("REAL_LITELLM_DB", "postgresql://litellm:litellm@127.0.0.1:5432/litellm_real")

pytestmark = pytest.mark.real_proxy


def check() -> tuple[int, dict[str, str]]:
    result = CliRunner().invoke(app, ["check"])
    return result.exit_code, {line.split(":", 1)[0].split(None, 1)[1]: line
                              for line in result.stdout.strip().splitlines()}


def test_check_reads_the_real_proxy(real_env, monkeypatch):
    code, lines = check()
    assert lines["proxy"].startswith("OK") and f"LiteLLM {TESTED_VERSION}" in lines["proxy"]
    assert lines["master key"].startswith("OK")
    assert lines["spend logs"].startswith("OK") and "/spend/logs/v2" in lines["spend logs"]
    monkeypatch.setenv("LITELLM_DATABASE_URL", REAL_DB)  # the direct source: the proxy's own tables
    code, lines = check()
    assert lines["spend logs"].startswith("OK") and "LITELLM_DATABASE_URL" in lines["spend logs"]


def test_a_master_key_the_real_proxy_refuses(real_env, monkeypatch):
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-not-the-master-key")
    code, lines = check()
    assert code == 1 and lines["master key"].startswith("FAIL") and "LITELLM_MASTER_KEY" in lines["master key"]
    proc = subprocess.run([sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", "signups"], cwd=ROOT,
                          env={**os.environ, **TEST_ENV, **real_env, "LITELLM_MASTER_KEY": "sk-not-the-master-key"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: the proxy refuses LITELLM_MASTER_KEY (HTTP 401); set it to the proxy's "
                                   "master key")
