"""Fixtures of the chaos suite: its own stand-in proxy over HTTP, worker pools, the broker client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.chaos.harness import ChaosProxy, Pool, free_port, worker_env
from tests.conftest import MASTER_KEY, TEST_ENV
from tests.fixtures import wait_for


@pytest.fixture(scope="session")
def chaos_proxy_server() -> Iterator[ChaosProxy]:
    proxy = ChaosProxy(master_key=MASTER_KEY, port=free_port(), hang_s=30.0).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def chaos_proxy(chaos_proxy_server: ChaosProxy) -> Iterator[ChaosProxy]:
    proxy = chaos_proxy_server
    # A request an earlier scenario left hanging (or a killed worker's last one) must land before
    # the reset, or it would write a key of that scenario into this one's proxy.
    wait_for(lambda: proxy.in_flight == 0, 90, "earlier proxy requests to finish")
    proxy.reset()
    proxy.hang_s = 30.0
    if proxy.server is None:
        proxy.start()
    yield proxy
    proxy.mode = "ok"
    if proxy.server is None:
        proxy.start()


@pytest.fixture
def pool(tmp_path: Path, chaos_proxy: ChaosProxy) -> Iterator[Pool]:
    workers = Pool(tmp_path, worker_env(chaos_proxy.url))
    yield workers
    workers.stop_all()


@pytest.fixture
def broker() -> redis.Redis:
    """The suite's Redis db (TEST_REDIS_DB) on the shared server; flushed before each test."""
    return redis.Redis.from_url(TEST_ENV["REDIS_URL"])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Scenario 8 last: its figures count the log lines every earlier scenario searched."""
    last = [item for item in items if item.nodeid.startswith("tests/chaos/test_secrets.py")]
    if last:
        items[:] = [item for item in items if item not in last] + last
