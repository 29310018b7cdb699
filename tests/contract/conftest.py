"""The same client calls against the stand-in and, with -m real_proxy, the real LiteLLM proxy."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import MASTER_KEY
from worker import proxy as client
from worker.settings import get_settings

REAL_URL = os.environ.get("REAL_LITELLM_URL")
REAL_KEY = os.environ.get("REAL_LITELLM_MASTER_KEY", "sk-master-1234")


@pytest.fixture(params=["standin", pytest.param("real", marks=pytest.mark.real_proxy)])
def target(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Points worker.proxy at one proxy; yields its name."""
    if request.param == "real":
        if not REAL_URL:
            pytest.skip("REAL_LITELLM_URL is not set")
        monkeypatch.setenv("LITELLM_BASE_URL", REAL_URL)
        monkeypatch.setenv("LITELLM_MASTER_KEY", REAL_KEY)
        # The shipped default, not the tests' 2 s: the real proxy shares the machine with CI and
        # takes seconds over some requests (an unknown key in /key/bulk_update).
        monkeypatch.setenv("PROXY_TIMEOUT_S", "10")
    else:
        standin = request.getfixturevalue("proxy")
        monkeypatch.setenv("LITELLM_BASE_URL", standin.url)
        monkeypatch.setenv("LITELLM_MASTER_KEY", MASTER_KEY)
    get_settings.cache_clear()
    client.reset_client()
    yield request.param
    client.reset_client()
    get_settings.cache_clear()
