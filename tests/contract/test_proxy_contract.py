"""What worker.proxy relies on, checked against whichever proxy `target` names."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from worker import keys
from worker import proxy as client


def _fresh() -> tuple[str, str]:
    key = keys.new_key()
    return key, f"contract-{uuid.uuid4().hex[:12]}"


def test_generate_with_our_own_key_stores_its_sha256(target):
    key, alias = _fresh()
    made = client.generate_key(key, alias, "contract-user", Decimal("2"))
    assert made.key == key and made.key_alias == alias
    info = client.key_info(keys.key_hash(key))
    assert info.info.key_alias == alias and info.info.max_budget == Decimal("2")
    assert info.info.budget_duration is None and info.info.spend == Decimal(0)


def test_alias_is_unique(target):
    key, alias = _fresh()
    client.generate_key(key, alias, "contract-user", Decimal("2"))
    with pytest.raises(client.PermanentProxyError, match="already exists"):
        client.generate_key(keys.new_key(), alias, "contract-user", Decimal("2"))


def test_max_budget_is_absolute_and_repeatable(target):
    key, alias = _fresh()
    client.generate_key(key, alias, "contract-user", Decimal("2"))
    for value in ("12", "12", "0.9"):
        client.set_max_budget(keys.key_hash(key), Decimal(value))
        assert client.key_info(keys.key_hash(key)).info.max_budget == Decimal(value)


def test_unknown_key_is_a_permanent_error(target):
    with pytest.raises(client.PermanentProxyError):
        client.key_info("0" * 64)


def test_spend_logs_page_shape(target):
    now = datetime.now(UTC).replace(microsecond=0)
    page = client.spend_logs(
        (now - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S"), now.strftime("%Y-%m-%d %H:%M:%S"), 1, 100
    )
    assert page.page == 1 and len(page.data) <= 100 and page.total >= len(page.data)


def test_page_size_over_1000_is_refused(target):
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    with pytest.raises(client.PermanentProxyError):
        client.spend_logs(now, now, 1, 1001)


def test_master_key_never_in_errors(target, caplog):
    from worker.settings import get_settings

    secret = get_settings().litellm_master_key.get_secret_value()
    with pytest.raises(client.ProxyError) as err:
        client.key_info("0" * 64)
    assert secret not in str(err.value) and secret not in caplog.text
