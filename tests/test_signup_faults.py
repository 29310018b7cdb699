"""Signups survive a dead worker and a dead proxy, and never print a secret."""

from __future__ import annotations

from decimal import Decimal

from tests.conftest import MASTER_KEY, TEST_ENV
from tests.fixtures import wait_for
from worker.credits import keys, ledger
from worker.db import session_scope
from worker.models import Account
from worker.producer import publish_signup

EVENT = {"user_id": "bob", "email": "bob@example.com", "occurred_at": "2026-11-20T10:00:00+01:00"}
FAST_REDELIVERY = {"BROKER_VISIBILITY_TIMEOUT_S": "4", "RETRY_BACKOFF_MAX_S": "1"}


def _account() -> Account | None:
    with session_scope() as session:
        return session.get(Account, "bob")


def test_worker_killed_mid_provisioning_leaves_exactly_one_key(workers, proxy):
    proxy.hang_s = 3.0
    proxy.mode = "hang"
    first = workers.start(env=FAST_REDELIVERY)
    publish_signup(EVENT)
    wait_for(lambda: proxy.requests.get("/key/generate"), 30, "the worker to call /key/generate")
    workers.kill(first)  # SIGKILL to the whole process group, mid-request
    proxy.mode = "ok"
    workers.start(env=FAST_REDELIVERY)
    wait_for(lambda: (a := _account()) and a.key_status == "active", 60, "the redelivered signup")
    assert len(proxy.keys) == 1
    assert proxy.key_by_alias("test-bob")["max_budget"] == 2.0
    with session_scope() as session:
        assert ledger.credited_total(session, "bob") == Decimal(2)


def test_proxy_down_then_back_applies_the_signup(workers, proxy):
    proxy.stop()
    workers.start(env=FAST_REDELIVERY)
    publish_signup(EVENT)
    wait_for(lambda: (a := _account()) and a.push_error, 30, "the push error to be recorded")
    assert _account().key_status == "pending"
    proxy.start()
    wait_for(lambda: (a := _account()) and a.key_status == "active", 60, "the retried signup")
    assert proxy.key_by_alias("test-bob")["max_budget"] == 2.0 and _account().push_error is None


def test_no_secret_in_debug_logs(workers, proxy):
    workers.start(env={"LOG_LEVEL": "DEBUG"})
    publish_signup(EVENT)
    wait_for(lambda: (a := _account()) and a.key_status == "active", 30, "the signup")
    virtual_key = keys.decrypt(_account().key_encrypted)
    output = workers.output()
    assert "key provisioned" in output
    for secret in (MASTER_KEY, virtual_key, TEST_ENV["KEY_ENCRYPTION_KEY"]):
        assert secret not in output
