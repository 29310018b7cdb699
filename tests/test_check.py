"""`litellm-credits check`: one line per dependency, exit 0 or 1, each failure naming its fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.chaos.harness import PrivateRedis
from worker.cli.main import app


def check(monkeypatch, **env: str | None):
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["check"])
    lines = {line.split(":", 1)[0]: line for line in result.stdout.strip().splitlines()}
    return result.exit_code, lines


@pytest.fixture(scope="module")
def aof_redis(tmp_path_factory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis"), appendonly=True).start()
    yield server
    server.kill()


def test_a_good_setup_passes_with_one_line_per_dependency(proxy, aof_redis, monkeypatch):
    code, lines = check(monkeypatch, REDIS_URL=aof_redis.url(), EVENT_SIGNING_SECRET="s" * 40)
    assert code == 0, lines
    assert list(lines) == ["OK   settings", "OK   database", "OK   redis", "OK   proxy", "OK   master key",
                           "OK   spend logs", "OK   signing", "OK   secrets"], lines
    assert "migrated to the head" in lines["OK   database"]
    assert "appendonly yes, maxmemory-policy noeviction" in lines["OK   redis"]
    assert "/spend/logs/v2" in lines["OK   spend logs"]


def test_warnings_do_not_fail_the_check(proxy, monkeypatch, tmp_path: Path):
    """Unsigned by choice, a Redis without AOF, a published sample secret: said, exit still 0."""
    no_aof = PrivateRedis(tmp_path / "redis", appendonly=False).start()
    try:
        code, lines = check(monkeypatch, REDIS_URL=no_aof.url(), FLOWER_PASSWORD="change-me")
    finally:
        no_aof.kill()
    assert code == 0, lines
    assert "appendonly is off" in lines["WARN redis"] and "set appendonly yes" in lines["WARN redis"]
    assert "ALLOW_UNSIGNED_EVENTS=true" in lines["WARN signing"]
    assert "FLOWER_PASSWORD" in lines["WARN secrets"] and "published sample" in lines["WARN secrets"]


def test_a_wrong_master_key_fails_naming_the_setting(proxy, monkeypatch):
    code, lines = check(monkeypatch, LITELLM_MASTER_KEY="sk-not-the-master-key")
    assert code == 1
    assert "LITELLM_MASTER_KEY" in lines["FAIL master key"] and "HTTP 401" in lines["FAIL master key"]
    assert "spend logs" not in " ".join(lines)  # not read with a refused key


def test_an_unmigrated_database_fails_naming_migrate(proxy, unmigrated, monkeypatch):
    code, lines = check(monkeypatch, DATABASE_URL=unmigrated)
    assert code == 1
    assert "run `litellm-credits migrate`" in lines["FAIL database"]


def test_unreachable_services_fail_naming_their_settings(monkeypatch):
    code, lines = check(monkeypatch, DATABASE_URL="postgresql+psycopg://postgres:pw@127.0.0.1:1/credits",
                        REDIS_URL="redis://127.0.0.1:1/0", LITELLM_BASE_URL="http://127.0.0.1:1")
    assert code == 1
    assert "DATABASE_URL" in lines["FAIL database"] and "pw" not in lines["FAIL database"]
    assert "REDIS_URL" in lines["FAIL redis"]
    assert "LITELLM_BASE_URL" in lines["FAIL proxy"]


def test_signing_off_without_the_opt_in_and_invalid_settings_fail(proxy, monkeypatch):
    code, lines = check(monkeypatch, ALLOW_UNSIGNED_EVENTS=None)
    assert code == 1 and "EVENT_SIGNING_SECRET" in lines["FAIL signing"]
    code, lines = check(monkeypatch, PAYMENT_PLANS="five", LITELLM_MASTER_KEY=None)
    assert code == 1 and list(lines) == ["FAIL settings"] and "PAYMENT_PLANS" in lines["FAIL settings"]
    code, lines = check(monkeypatch, PAYMENT_PLANS="5")
    assert code == 1 and "LITELLM_MASTER_KEY not set" in lines["FAIL settings"]
