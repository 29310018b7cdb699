"""End-to-end against the real LiteLLM proxy (REAL_LITELLM_URL), with real workers, PostgreSQL and Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import httpx
import pytest

from worker import proxy as client
from worker.settings import get_settings

REAL_URL = os.environ.get("REAL_LITELLM_URL")
REAL_KEY = os.environ.get("REAL_LITELLM_MASTER_KEY", "sk-master-1234")

pytestmark = pytest.mark.real_proxy


@pytest.fixture
def real_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Settings for this process and for the workers the test starts: the real proxy, unique aliases."""
    if not REAL_URL:
        pytest.skip("REAL_LITELLM_URL is not set")
    env = {"LITELLM_BASE_URL": REAL_URL, "LITELLM_MASTER_KEY": REAL_KEY,
           "KEY_ALIAS_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}-", "PROXY_TIMEOUT_S": "30"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    client.reset_client()
    yield env
    client.reset_client()
    get_settings.cache_clear()


def chat(key: str, model: str = "fake-gpt") -> httpx.Response:
    return httpx.post(
        f"{REAL_URL}/chat/completions", headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hello"}]}, timeout=60,
    )
