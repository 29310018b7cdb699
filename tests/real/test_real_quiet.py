"""What the quiet reconcile relies on, and its repair of a spend counter, against the real proxy.

- Every write to a key moves its updated_at, the proxy's own spend update after a call included
  (LiteLLM writes it with Prisma's update_many, and the column is @updatedAt), and /key/list sorts
  by it: so a pass that reads only the keys written since the last one misses no change.
- A key whose spend counter was set back by hand, or given a budget_duration (a reset to come),
  is restored to the ledger's usage with its duration cleared (issue 20, item 5).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from tasks.payment import payment
from tasks.signup import signup
from tests.fixtures import wait_for
from tests.real.conftest import REAL_KEY, REAL_URL, chat
from worker import proxy as client
from worker.credits import key_sources, keys, ledger
from worker.credits.reconcile import reconcile
from worker.db import session_scope
from worker.models import Account

pytestmark = pytest.mark.real_proxy


def _account(user_id: str, paid: bool = False) -> tuple[str, str]:
    """(key, key hash) of a user signed up (and paid 5 USD: credited 12) in this process."""
    now = datetime.now(UTC).isoformat()
    signup.apply(kwargs={"event": {"user_id": user_id, "occurred_at": now}})
    if paid:
        payment.apply(kwargs={"event": {"reference": f"ref-{uuid.uuid4().hex}", "user_id": user_id,
                                        "amount_minor": 500, "currency": "USD", "paid_at": now}})
    with session_scope() as session:
        account = session.get(Account, user_id)
        return keys.decrypt(account.key_encrypted), account.key_hash


def _edit(key_hash: str, **fields) -> None:
    httpx.post(f"{REAL_URL}/key/update", json={"key": key_hash, **fields},
               headers={"Authorization": f"Bearer {REAL_KEY}"}, timeout=30).raise_for_status()


def _changed_since(since: datetime) -> list[str]:
    return [k.token for page in key_sources.changed_keys(since) for k in page]


def test_a_spend_update_moves_updated_at_and_the_changed_listing_shows_the_key(real_env):
    key, key_hash = _account(f"q-{uuid.uuid4().hex[:8]}")
    _other_key, other_hash = _account(f"q-{uuid.uuid4().hex[:8]}")
    (listed,) = [k for page in key_sources.listed_keys() for k in page if k.token == key_hash]
    assert listed.updated_at is not None
    assert _changed_since(listed.updated_at + timedelta(milliseconds=1)) in ([other_hash], [])

    assert chat(key).status_code == 200
    wait_for(lambda: client.key_info(key_hash).info.spend > 0, 60, "the proxy's spend update of the key")
    changed = _changed_since(listed.updated_at + timedelta(milliseconds=1))
    assert key_hash in changed and changed[0] == key_hash  # newest first


def test_a_spend_counter_set_back_by_hand_is_restored_on_the_real_proxy(real_env):
    user = f"q-{uuid.uuid4().hex[:8]}"
    _key, key_hash = _account(user, paid=True)
    with session_scope() as session:
        ledger.record(session, user_id=user, kind="usage", idempotency_key=f"spend:{user}-r1",
                      spent=Decimal("11.5"), occurred_at=datetime.now(UTC))
    _edit(key_hash, spend=11.5)
    assert reconcile(fix=True).spend_restored == []  # a full pass: nothing to restore

    _edit(key_hash, spend=0, budget_duration="30d")  # 12 to spend against a remaining 0.5
    report = reconcile(fix=True)  # reads only the keys changed since the last pass
    assert not report.full
    assert [(d.user_id, d.proxy, d.ledger) for d in report.spend_restored] == [(user, Decimal(0), Decimal("11.5"))]
    info = client.key_info(key_hash).info
    assert info.spend == Decimal("11.5") and info.budget_duration is None and info.max_budget == Decimal(12)
    assert reconcile(fix=True).spend_restored == []

    # Only a budget_duration set by hand, the counter right: the duration is cleared and the
    # counter left as it is (setting it to the ledger's figure could lower it below spend the
    # sync has not read yet).
    _edit(key_hash, spend=11.75, budget_duration="7d")
    report = reconcile(fix=True)
    assert [d.user_id for d in report.spend_restored] == [user]
    info = client.key_info(key_hash).info
    assert info.budget_duration is None and info.spend == Decimal("11.75")
