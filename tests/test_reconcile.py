"""Reconcile: drift between the ledger and the proxy is reported, and repaired with fix."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text as text_
from typer.testing import CliRunner

from schemas.routes import ROUTES
from tasks.payment import payment
from tasks.reconcile import reconcile_task
from tasks.signup import signup
from tests.fixtures import wait_for
from worker.app import app
from worker.cli.main import app as cli
from worker.credits import ledger
from worker.credits.accounts import ensure_account
from worker.credits.reconcile import Drift, reconcile
from worker.db import Lock, exclusive, session_scope
from worker.models import Account

NOW = "2026-11-20T10:00:00Z"


def signup_user(user_id: str) -> str:
    signup.apply(kwargs={"event": {"user_id": user_id, "occurred_at": NOW}})
    with session_scope() as session:
        return session.get(Account, user_id).key_hash


def pay(user_id: str, reference: str) -> None:
    payment.apply(kwargs={"event": {"reference": reference, "user_id": user_id, "amount_minor": 500,
                                    "currency": "USD", "paid_at": NOW}})


def drifted_pair(proxy) -> str:
    """ann (2) and bob (12), with bob's key knocked back to 2 by hand on the proxy."""
    signup_user("ann")
    bob = signup_user("bob")
    pay("bob", "pay-1")
    proxy.keys[bob]["max_budget"] = 2
    return bob


def test_drift_is_only_reported_without_fix(proxy):
    bob = drifted_pair(proxy)
    report = reconcile()
    assert report.checked == 2 and report.fixed == 0
    assert report.drifted == [Drift("bob", Decimal(2), Decimal(12))]
    assert proxy.keys[bob]["max_budget"] == 2 and not report.errors and not report.spend_mismatches


def test_drift_is_repaired_with_fix(proxy):
    bob = drifted_pair(proxy)
    report = reconcile(fix=True)
    assert report.drifted == [Drift("bob", Decimal(2), Decimal(12))] and report.fixed == 1
    assert proxy.keys[bob]["max_budget"] == 12
    with session_scope() as session:
        account = session.get(Account, "bob")
        assert account.budget_pushed_usd == 12 and account.push_error is None
    again = reconcile(fix=True)
    assert again.checked == 2 and not again.drifted and again.fixed == 0


def test_unlimited_key_and_tiny_float_noise(proxy):
    ann, bob = signup_user("ann"), signup_user("bob")
    proxy.keys[ann]["max_budget"] = None
    proxy.keys[bob]["max_budget"] = 2.0000000001  # within the tolerance
    assert reconcile().drifted == [Drift("ann", None, Decimal(2))]


def test_spend_differences_are_reported(proxy):
    ann, bob = signup_user("ann"), signup_user("bob")
    proxy.add_spend(ann, 0.05, datetime.now(UTC))
    proxy.add_spend(bob, 0.1, datetime.now(UTC))
    with session_scope() as session:
        ledger.record(session, user_id="bob", kind="usage", idempotency_key="usage:r1", spent=Decimal("0.1"),
                      occurred_at=datetime.now(UTC))
    report = reconcile(fix=True)
    assert report.spend_mismatches == [Drift("ann", Decimal("0.05"), Decimal(0))]
    assert not report.drifted and report.fixed == 0


def test_pending_account_is_reported_then_provisioned_by_fix(proxy):
    with session_scope() as session:
        ensure_account(session, "carl")
    report = reconcile()
    assert report.pending == ["carl"] and report.fixed == 0 and not proxy.keys
    report = reconcile(fix=True)
    assert report.pending == ["carl"] and report.fixed == 1
    (key,) = proxy.keys.values()
    assert key["key_alias"] == "test-carl" and key["max_budget"] == 0
    assert reconcile().pending == []


def test_pages_through_the_key_listing_without_one_request_per_account(proxy):
    users = [f"user-{n}" for n in range(7)]
    for user in users:
        signup_user(user)
    # The proxy's filter is a substring match: a key it lists whose alias does not start with our
    # prefix is not taken for ours; its account, not seen in the listing, is read on its own.
    proxy.keys[signup_user("other")]["key_alias"] = "xtest-other"
    proxy.requests.clear()
    report = reconcile(page_size=3)
    assert report.checked == 8 and not report.drifted and not report.errors
    # Three pages, and one request for the newest write before the pass (its watermark).
    assert proxy.requests == {"/key/list": 4, "/key/info": 1}


def test_a_key_edited_during_a_full_pass_is_read_by_the_next_pass(proxy, monkeypatch):
    """A full pass lists keys in alias order; a hand edit of a key it has listed already, made
    while later pages are read, must not fall below the watermark that pass saves."""
    from worker.credits import key_sources

    hashes = [signup_user(f"user-{n}") for n in range(6)]
    listed = key_sources.listed_keys

    def edited_after_the_first_page(page_size):
        for number, page in enumerate(listed(page_size)):
            yield page
            if number == 0:  # its first key edited by hand, then a key of a later page spends
                proxy.keys[hashes[0]].update(max_budget=99.0, updated_at=proxy._now())
                later = datetime.fromisoformat(proxy._now()) + timedelta(minutes=5)
                proxy.keys[hashes[-1]]["updated_at"] = later.isoformat(timespec="milliseconds")

    monkeypatch.setattr(key_sources, "listed_keys", edited_after_the_first_page)
    assert reconcile(fix=True, page_size=3, full=True).full
    monkeypatch.undo()
    report = reconcile(fix=True)
    assert not report.full and report.fixed == 1 and proxy.keys[hashes[0]]["max_budget"] == 2


def test_missing_key_is_an_error_and_the_rest_still_checked(proxy):
    ann = signup_user("ann")
    signup_user("bob")
    del proxy.keys[ann]
    report = reconcile(fix=True)
    assert report.checked == 2 and len(report.errors) == 1 and report.errors[0].startswith("ann: /key/info")
    assert report.key_errors == 1


def test_failing_proxy_stops_the_run(proxy):
    for n in range(8):
        signup_user(f"user-{n}")
    proxy.mode = "error"
    report = reconcile(fix=True)
    assert report.checked == 0 and report.fixed == 0 and report.key_errors == 0
    # A page that fails is passed over (one bad key can fail it); three in a row: the proxy is down.
    assert len(report.errors) == 3 and report.errors[0].startswith("key listing page 1 could not be read")
    assert report.errors[-1].startswith("/key/list: HTTP 500") and "not compared" in report.errors[-1]


def test_beat_task_fixes_and_skips_while_another_run_holds_the_lock(proxy):
    assert reconcile_task.name == "ops.reconcile" and ROUTES["ops.reconcile"] == "periodic"
    bob = drifted_pair(proxy)
    with exclusive(Lock.RECONCILE) as held:
        assert held
        reconcile_task.apply()
        assert proxy.keys[bob]["max_budget"] == 2
    reconcile_task.apply()
    assert proxy.keys[bob]["max_budget"] == 12


def test_beat_task_runs_on_a_real_worker(workers, proxy):
    bob = drifted_pair(proxy)
    workers.start(queues="periodic")
    app.send_task("ops.reconcile")
    wait_for(lambda: proxy.keys[bob]["max_budget"] == 12, 30, "the reconcile task's fix")


def test_cli_json_reports_and_fixes(proxy):
    bob = drifted_pair(proxy)
    runner = CliRunner()
    result = runner.invoke(cli, ["reconcile", "--json"])
    assert result.exit_code == 1, result.output  # drift found and left: a cron job or monitor sees it
    report = json.loads(result.stdout)
    assert report["checked"] == 2 and report["fixed"] == 0
    assert report["drifted"] == [{"user_id": "bob", "proxy": "2", "ledger": "12.0000000000"}]
    assert proxy.keys[bob]["max_budget"] == 2
    result = runner.invoke(cli, ["reconcile", "--fix", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["fixed"] == 1
    assert proxy.keys[bob]["max_budget"] == 12


def test_cli_table(proxy):
    drifted_pair(proxy)
    result = CliRunner().invoke(cli, ["reconcile"])
    assert result.exit_code == 1, result.output
    assert "max_budget drift" in result.output and "bob" in result.output
    assert "1 differences or unchecked keys found" in result.stderr


def test_spend_not_yet_synced_is_explained_by_the_settle_window(proxy):
    """Rows after the sync cursor are the settle window at work, not a mismatch; a gap before it is."""
    from datetime import timedelta

    from worker.spend import sync as spend_sync

    ann, bob = signup_user("ann"), signup_user("bob")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    proxy.add_spend(ann, 0.25, start + timedelta(minutes=10))
    spend_sync.sync(now=start + timedelta(minutes=30), start=start)
    proxy.add_spend(ann, 0.5, datetime.now(UTC))  # after the cursor: not synced yet
    # Spend the proxy counts with no row behind it, on a key last written before the cursor.
    proxy.keys[bob].update(spend=0.3, updated_at=start.isoformat())
    before = dict(proxy.requests)
    report = reconcile()
    assert report.spend_mismatches == [Drift("bob", Decimal("0.3"), Decimal(0))]
    # Ann's key was written after the cursor: the rows behind its spend are still to come, and
    # no spend-log request is made to find that out; bob's gap costs one.
    assert proxy.requests.get("/spend/logs/v2", 0) - before.get("/spend/logs/v2", 0) == 1


def test_usage_filed_beyond_the_verification_horizon_is_debited_by_reconcile(proxy):
    """A row the proxy filed 30 h after its start, past SPEND_VERIFY_S: no window is verified
    that far back, but the key's spend shows it, and reconcile reads and debits it, once."""
    from datetime import timedelta

    from sqlalchemy import update

    ann = signup_user("ann")
    with session_scope() as session:
        session.execute(update(Account).where(Account.user_id == "ann")
                        .values(created_at=datetime.now(UTC) - timedelta(days=3)))
    for hours in (30, 40, 50):
        proxy.add_spend(ann, 0.125, datetime.now(UTC) - timedelta(hours=hours))

    report = reconcile(fix=True)
    assert report.spend_repaired == ["ann"] and not report.spend_mismatches
    with session_scope() as session:
        assert ledger.balance(session, "ann").spent_usd == Decimal("0.375")
    assert reconcile(fix=True).spend_repaired == []  # nothing left to repair: nothing debited twice
    with session_scope() as session:
        assert ledger.balance(session, "ann").spent_usd == Decimal("0.375")


def test_an_unreadable_key_is_reported_and_every_other_key_still_repaired(proxy):
    """ann's spend is NaN on the proxy; zed, later in alias order, was raised to 999 by hand."""
    ann, zed = signup_user("ann"), signup_user("zed")
    signup_user("bob")
    proxy.keys[ann]["spend"] = float("nan")
    proxy.keys[zed]["max_budget"] = 999
    for _ in range(2):  # run after run
        report = reconcile(fix=True)
        # As the real proxy does, the listing fails the page that holds ann; its keys are read one
        # by one, and only ann's fails.
        assert report.key_errors == 1 and report.errors[0].startswith("key listing page 1 could not be read")
        assert report.errors[1].startswith("ann: ValidationError") and len(report.errors) == 2
    assert report.checked == 3 and proxy.keys[zed]["max_budget"] == 2
    assert Drift("zed", Decimal(999), Decimal(2)) not in report.drifted  # fixed by the first run


def test_a_spend_check_that_fails_for_one_key_leaves_the_others_checked(proxy, monkeypatch):
    from worker.credits import spend_check

    ann, bob = signup_user("ann"), signup_user("bob")
    proxy.keys[ann]["spend"] = 0.5
    proxy.keys[bob]["spend"] = 0.25
    real = spend_check.unsynced_explains

    def failing(session, key_hash, proxy_spend):
        if key_hash == ann:
            raise RuntimeError("spend logs unreadable")
        return real(session, key_hash, proxy_spend)

    monkeypatch.setattr(spend_check, "unsynced_explains", failing)
    report = reconcile()
    assert report.errors == ["ann: RuntimeError: spend logs unreadable"] and report.key_errors == 1
    assert report.spend_mismatches == [Drift("bob", Decimal("0.25"), Decimal(0))]


def test_keys_are_read_from_the_proxy_database_when_it_is_configured(proxy, monkeypatch):
    """LITELLM_DATABASE_URL: "LiteLLM_VerificationToken" read directly (here a table of that
    shape in the test database): no /key/list, and /key/info only to confirm a drift."""
    from sqlalchemy import text

    from tests.conftest import TEST_ENV
    from worker.settings import get_settings

    ann, bob = signup_user("ann"), signup_user("bob")
    pay("bob", "pay-1")
    with session_scope() as session:
        session.execute(text('CREATE TABLE IF NOT EXISTS "LiteLLM_VerificationToken" (token text PRIMARY KEY, '
                             'key_alias text, max_budget double precision, spend double precision NOT NULL, '
                             'budget_duration text, updated_at timestamp(3) NOT NULL DEFAULT now())'))
        session.execute(text('TRUNCATE "LiteLLM_VerificationToken"'))
        session.execute(text('INSERT INTO "LiteLLM_VerificationToken" (token, key_alias, max_budget, spend) '
                             'VALUES (:a, \'test-ann\', 2, 0), '
                             '(:b, \'test-bob\', 2, \'NaN\'), (\'t3\', \'test-carl\', 2, 0), '
                             '(\'t4\', \'other-dan\', 2, 0)'), {"a": ann, "b": bob})
    monkeypatch.setenv("LITELLM_DATABASE_URL", TEST_ENV["DATABASE_URL"])
    get_settings.cache_clear()
    try:
        proxy.requests.clear()
        report = reconcile()
        assert report.checked == 1 and report.key_errors == 1 and report.errors[0].startswith("test-bob:")
        assert proxy.requests == {}
        proxy.keys[bob].update(spend=0, max_budget=5)  # a drift, as the listing and /key/info both see it
        with session_scope() as session:
            # As the proxy's Prisma writes do, the edit moves updated_at.
            session.execute(text('UPDATE "LiteLLM_VerificationToken" SET spend = 0, max_budget = 5, '
                                 'updated_at = now() WHERE token = :b'), {"b": bob})
        report = reconcile(fix=True)
        assert report.drifted == [Drift("bob", Decimal(5), Decimal(12))] and report.fixed == 1
        assert proxy.keys[bob]["max_budget"] == 12  # confirmed by /key/info, pushed by /key/update
    finally:
        with session_scope() as session:
            session.execute(text('DROP TABLE "LiteLLM_VerificationToken"'))


def _hand_edit(proxy, key_hash: str, **fields) -> None:
    """An operator's edit through the proxy's own API (it moves the key's updated_at)."""
    import httpx

    from tests.conftest import MASTER_KEY

    httpx.post(f"{proxy.url}/key/update", json={"key": key_hash, **fields},
               headers={"Authorization": f"Bearer {MASTER_KEY}"}).raise_for_status()


def _time_passes(proxy) -> None:
    """Every key's last write is older than the watermark, as after a quiet while."""
    from sqlalchemy import text

    with session_scope() as session:
        watermark = session.execute(text("SELECT watermark FROM reconcile_state")).scalar_one()
    for key in proxy.keys.values():
        key["updated_at"] = (watermark.astimezone(UTC).replace(tzinfo=None) - timedelta(minutes=1)).isoformat()


def test_a_pass_reads_only_the_keys_changed_since_the_last_and_repairs_a_hand_edit(proxy):
    hashes = {f"u{i:03d}": signup_user(f"u{i:03d}") for i in range(150)}
    first = reconcile(fix=True)
    assert first.full and first.checked == 150
    _time_passes(proxy)

    proxy.requests.clear()
    idle = reconcile(fix=True)
    assert not idle.full and idle.checked == 0
    assert proxy.requests == {"/key/list": 1}  # one page, whatever the number of keys

    _hand_edit(proxy, hashes["u077"], max_budget=999)
    proxy.requests.clear()
    report = reconcile(fix=True)
    assert not report.full and report.checked == 1
    assert report.drifted == [Drift("u077", Decimal(999), Decimal(2))] and report.fixed == 1
    assert proxy.keys[hashes["u077"]]["max_budget"] == 2
    assert proxy.requests["/key/list"] == 1


def test_keys_written_in_the_last_minute_before_a_quiet_while_are_not_read_at_every_pass(proxy):
    # A bulk import writes every key within a minute. Writes can commit out of updated_at order
    # (key_changes.SLACK), so those keys are read again until a pass has run a minute after the
    # watermark moved; after that an idle pass reads none of them.
    for i in range(150):
        signup_user(f"b{i:03d}")
    assert reconcile(fix=True).full
    assert reconcile(fix=True).checked == 150  # within the minute: read again
    with session_scope() as session:  # a minute and more goes by
        session.execute(text_("UPDATE reconcile_state SET moved_at = moved_at - interval '61 seconds'"))
    assert reconcile(fix=True).checked == 150  # the pass that settles the watermark
    proxy.requests.clear()
    idle = reconcile(fix=True)
    assert not idle.full and idle.checked == 0
    assert proxy.requests == {"/key/list": 1}


def test_every_key_is_read_again_once_reconcile_full_s_has_passed(proxy, monkeypatch):
    from worker.settings import get_settings

    for i in range(3):
        signup_user(f"f{i}")
    assert reconcile().full
    _time_passes(proxy)
    assert not reconcile().full
    monkeypatch.setenv("RECONCILE_FULL_S", "1")
    get_settings.cache_clear()
    with session_scope() as session:
        session.execute(text_("UPDATE reconcile_state SET full_at = full_at - interval '2 seconds'"))
    report = reconcile()
    assert report.full and report.checked == 3


def test_a_spend_counter_set_back_or_given_a_budget_duration_is_restored_to_the_ledgers_usage(proxy):
    """Issue 20: with the proxy's spend below the ledger's usage the key could spend 12 against a
    remaining 0.5."""
    bob = signup_user("bob")
    pay("bob", "pay-1")  # credited 12
    with session_scope() as session:
        ledger.record(session, user_id="bob", kind="usage", idempotency_key="spend:r-1", spent=Decimal("11.5"),
                      occurred_at=datetime.now(UTC))
    proxy.keys[bob]["spend"] = 11.5
    assert reconcile(fix=True).spend_restored == []

    _hand_edit(proxy, bob, spend=0)  # the counter set back by hand
    report = reconcile(fix=True)
    assert [(d.user_id, d.proxy, d.ledger) for d in report.spend_restored] == [("bob", Decimal(0), Decimal("11.5"))]
    assert proxy.keys[bob]["spend"] == 11.5 and proxy.keys[bob]["max_budget"] == 12

    _hand_edit(proxy, bob, budget_duration="30d")  # a reset to come
    report = reconcile(fix=True)
    assert [d.user_id for d in report.spend_restored] == ["bob"]
    assert proxy.keys[bob]["budget_duration"] is None and proxy.keys[bob]["spend"] == 11.5
    assert reconcile(fix=True).spend_restored == []
