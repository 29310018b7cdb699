"""What worker.proxy relies on, checked against whichever proxy `target` names."""

from __future__ import annotations

import json
import socket
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest

from tests.waiting import wait_for
from worker import proxy as client
from worker.credits import keys
from worker.settings import get_settings


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


def test_bulk_update_sets_each_budget_and_names_the_keys_it_refused(target):
    made = []
    for _ in range(2):
        key, alias = _fresh()
        client.generate_key(key, alias, "contract-user", Decimal("2"))
        made.append(keys.key_hash(key))
    unknown = "0" * 64
    refused = client.set_max_budgets({made[0]: Decimal("12"), unknown: Decimal("5"), made[1]: Decimal("0.9")})
    assert list(refused) == [unknown] and isinstance(refused[unknown], client.PermanentProxyError)
    assert client.key_info(made[0]).info.max_budget == Decimal("12")
    assert client.key_info(made[1]).info.max_budget == Decimal("0.9")


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
    secret = get_settings().litellm_master_key.get_secret_value()
    with pytest.raises(client.ProxyError) as err:
        client.key_info("0" * 64)
    assert secret not in str(err.value) and secret not in caplog.text


@pytest.mark.parametrize("sent", [0, 0.5], ids=["headers-only", "half-body"])
def test_a_request_cut_short_makes_no_key(target, request, sent):
    """A worker killed after sending /key/generate's headers, and all or part of its body, leaves no key."""
    settings = get_settings()
    before = _key_count()
    key, alias = _fresh()
    body = json.dumps({"key": key, "key_alias": alias, "max_budget": 2}).encode()
    url = urlsplit(settings.litellm_base_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        conn.sendall(b"POST /key/generate HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {settings.litellm_master_key.get_secret_value()}\r\n".encode()
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: int(len(body) * sent)])
    if target == "standin":
        proxy = request.getfixturevalue("proxy")
        wait_for(lambda: proxy.requests.get("/key/generate"), 10, "the stand-in to read the request")
    assert _key_count() == before


def _key_count() -> int:
    return client.call("GET", "/key/list", params={"page": 1, "size": 1})["total_count"]


def test_key_list_pages_by_alias_substring_in_alias_order(target):
    """What reconcile's bulk read relies on: key_alias with substring_matching is a contains
    match (so the caller keeps the aliases that start with its prefix), sort_by=key_alias pages
    in a stable order, and each full object carries token, max_budget and spend."""
    prefix = f"contract-list-{uuid.uuid4().hex[:8]}-"
    made = {}
    for name in ("c", "a", "b"):
        key = keys.new_key()
        client.generate_key(key, prefix + name, "contract-user", Decimal("3"))
        made[prefix + name] = keys.key_hash(key)
    client.generate_key(keys.new_key(), "x" + prefix + "z", "contract-user", Decimal("3"))  # contains it
    first, second = client.list_keys(prefix, 1, 2), client.list_keys(prefix, 2, 2)
    assert first.total_count == 4 and first.total_pages == 2
    listed = [k["key_alias"] for k in first.keys + second.keys]
    assert listed == sorted(listed) and sorted(listed) == sorted([*made, "x" + prefix + "z"])
    for raw in first.keys + second.keys:
        if raw["key_alias"] in made:
            assert raw["token"] == made[raw["key_alias"]] and Decimal(str(raw["max_budget"])) == 3
            assert Decimal(str(raw["spend"])) == 0
    if target == "real":
        client.call("POST", "/key/delete", json={"key_aliases": [*made, "x" + prefix + "z"]})
