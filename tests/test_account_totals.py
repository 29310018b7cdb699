"""Running totals: kept by every writer, equal to the ledger's sums, and audited against them."""

from __future__ import annotations

import logging
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from importlib import import_module

from sqlalchemy import text
from typer.testing import CliRunner

from schemas.events import PaymentEvent, RefundEvent, SignupEvent
from tests.spend_helpers import BASE, account
from tests.standin.proxy import token
from worker import figures
from worker.cli.main import app as cli
from worker.credits.audit import audit_all, audit_slice
from worker.credits.payments import apply_payments
from worker.credits.refunds import apply_refund
from worker.credits.signup import apply_signup
from worker.db import engine, session_scope
from worker.errors import Rejected
from worker.spend.ingest import write_page
from worker.spend.rows import Row

COLUMNS = ("credited_usd", "paid_usd", "spent_usd", "remaining_usd", "savings_usd", "last_spend_at")
# account_balances as 0001 defined it: every figure summed from the ledger at query time.
REFERENCE = import_module("migrations.versions.0001_ledger").BALANCES_VIEW.replace(
    "CREATE VIEW account_balances", "CREATE OR REPLACE TEMP VIEW balances_from_ledger")


def both_views(user_ids: list[str]) -> tuple[list, list]:
    cols = ", ".join(COLUMNS)
    with session_scope() as session:
        session.execute(text(REFERENCE))
        ours = session.execute(text(f"SELECT user_id, {cols} FROM account_balances WHERE user_id = ANY(:u) "
                                    "ORDER BY user_id"), {"u": user_ids}).all()
        ref = session.execute(text(f"SELECT user_id, {cols} FROM balances_from_ledger WHERE user_id = ANY(:u) "
                                   "ORDER BY user_id"), {"u": user_ids}).all()
    return ours, ref


def pay(user_id: str, ref: str, minor: int, at) -> None:
    with session_scope() as session:
        assert apply_payments(session, [PaymentEvent(reference=ref, user_id=user_id, amount_minor=minor,
                                                     currency="USD", paid_at=at)]) == [None]


def refund(user_id: str, ref: str, payment: str, minor: int, at) -> None:
    with session_scope() as session:
        apply_refund(session, RefundEvent(refund_reference=ref, payment_reference=payment, user_id=user_id,
                                          amount_minor=minor, currency="USD", refunded_at=at))


def spend(rows: list[tuple[str, str, Decimal]], at) -> None:
    """Usage through the spend ingest statement: (request id, key, cost)."""
    with session_scope() as session:
        write_page(session, [Row(rid, token(key), "m", cost, 1, 1, "success", at) for rid, key, cost in rows])


def test_random_histories_match_the_ledger_and_the_old_view(proxy):
    rnd = random.Random(16)
    users = {f"u{i}": f"sk-u{i}" for i in range(6)}
    for user_id, key in users.items():
        account(user_id, key)
    at, payments, n = BASE, {u: [] for u in users}, 0
    for step in range(160):
        user_id = rnd.choice(sorted(users))
        at += timedelta(minutes=1)
        roll = rnd.random()
        if roll < 0.1:
            with session_scope() as session:
                apply_signup(session, SignupEvent(user_id=user_id, occurred_at=at))
        elif roll < 0.25:
            ref = f"p{step}"
            pay(user_id, ref, rnd.choice([500, 1500, 2000]), at)
            payments[user_id].append(ref)
        elif roll < 0.32 and payments[user_id]:
            try:
                refund(user_id, f"r{step}", rnd.choice(payments[user_id]), rnd.choice([100, 250]), at)
            except Rejected:  # more than is left on that payment
                pass
        else:
            rows = []
            for _ in range(rnd.randint(1, 5)):
                n += 1
                rows.append((f"req-{n}", users[rnd.choice(sorted(users))],
                             Decimal(rnd.randint(1, 400_000)) / Decimal(100_000)))
            spend(rows, at)
    ours, ref = both_views(sorted(users))
    assert ours == ref and len(ours) == 6
    assert any(r.savings_usd > 0 for r in ours)
    assert audit_all().mismatches == []


def test_a_refund_of_an_old_payment_moves_the_later_grants(proxy):
    account("ada", "sk-ada")
    with session_scope() as session:
        apply_signup(session, SignupEvent(user_id="ada", occurred_at=BASE))
    pay("ada", "p1", 500, BASE + timedelta(minutes=1))  # credit 10 for 5
    pay("ada", "p2", 2000, BASE + timedelta(minutes=2))  # credit 40 for 20
    spend([("a1", "sk-ada", Decimal("13"))], BASE + timedelta(minutes=3))
    for minor, ref in ((300, "r1"), (200, "r2")):  # p1 refunded whole, in two parts
        refund("ada", ref, "p1", minor, BASE + timedelta(minutes=4))
        ours, expected = both_views(["ada"])
        assert ours == expected
    # The signup's 2 free, then p2's 11 of 40 at half price: 2 + 5.5.
    assert ours[0].savings_usd == Decimal("7.5") and ours[0].credited_usd == Decimal(42)


def test_concurrent_writers_of_one_account_keep_exact_totals(proxy):
    account("hot", "sk-hot")

    def payment(i: int) -> None:
        pay("hot", f"c{i}", 500, BASE)

    def usage(i: int) -> None:
        spend([(f"h{i}-{j}", "sk-hot", Decimal("0.01")) for j in range(20)], BASE + timedelta(seconds=i))

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: payment(i) if i % 3 == 0 else usage(i), range(60)))
    ours, ref = both_views(["hot"])
    assert ours == ref and ours[0].credited_usd == Decimal(200) and ours[0].spent_usd == Decimal("8")
    assert audit_all().mismatches == []


def tamper(sql: str) -> None:
    with engine().begin() as conn:
        conn.execute(text(sql))


def test_a_total_that_drifts_from_the_ledger_is_reported_loudly(proxy, caplog):
    for user_id in ("a", "b"):
        account(user_id, f"sk-{user_id}")
        pay(user_id, f"p-{user_id}", 500, BASE)
    spend([("x1", "sk-b", Decimal("3"))], BASE)
    tamper("UPDATE account_totals SET spent_usd = spent_usd + 1 WHERE user_id = 'b'")
    with caplog.at_level(logging.ERROR, logger="worker.credits.audit"):
        report = audit_all()
    assert [(m.user_id, m.part) for m in report.mismatches] == [("b", "totals")]
    assert report.mismatches[0].ledger["spent_usd"] == 3 and report.mismatches[0].stored["spent_usd"] == 4
    assert any(r.levelno == logging.ERROR and "b" in r.getMessage() for r in caplog.records)
    with engine().connect() as conn:
        assert figures.read(conn).audit_mismatches == 1
    result = CliRunner().invoke(cli, ["audit", "--json"])
    assert result.exit_code == 1 and '"mismatches"' in result.output
    tamper("UPDATE account_grants SET credit_before = credit_before + 1 WHERE user_id = 'a'")
    found = {(m.user_id, m.part) for m in audit_all().mismatches}
    assert found == {("b", "totals"), ("a", "grant payment:paystack:p-a")}
    tamper("UPDATE account_usage_segments SET spent_usd = spent_usd + 1 WHERE user_id = 'b' AND spent_usd > 0")
    found = {(m.user_id, m.part.split(" 2")[0]) for m in audit_all().mismatches}
    assert found == {("b", "totals"), ("a", "grant payment:paystack:p-a"), ("b", "usage from")}
    tamper("UPDATE account_grants SET credit_before = credit_before - 1 WHERE user_id = 'a'; "
           "UPDATE account_totals SET spent_usd = spent_usd - 1 WHERE user_id = 'b'; "
           "UPDATE account_usage_segments SET spent_usd = spent_usd - 1 WHERE user_id = 'b' AND spent_usd > 1")
    assert audit_all().mismatches == []
    with engine().connect() as conn:
        assert figures.read(conn).audit_mismatches == 0
    assert CliRunner().invoke(cli, ["audit"]).exit_code == 0


def test_reconcile_audits_a_bounded_slice_and_goes_round(proxy):
    for i in range(5):
        account(f"s{i}", f"sk-s{i}")
        spend([(f"s{i}-{j}", f"sk-s{i}", Decimal("0.5")) for j in range(10)], BASE)  # 10 entries each
    tamper("UPDATE account_totals SET entries = entries + 1 WHERE user_id = 's4'")  # 11 entries claimed
    first = audit_slice(max_entries=25)
    assert (first.accounts, first.entries, first.wrapped, first.mismatches) == (2, 20, False, [])
    second = audit_slice(max_entries=25)
    assert (second.accounts, second.entries) == (2, 20)
    third = audit_slice(max_entries=25)
    assert (third.accounts, third.wrapped, [m.user_id for m in third.mismatches]) == (1, True, ["s4"])
    assert audit_slice(max_entries=1).accounts == 1  # one account at least, from the first again
    with session_scope() as session:
        assert session.execute(text("SELECT after_user_id, passes FROM audit_cursor")).one() == ("s0", 1)


def test_reconcile_runs_the_audit(proxy):
    from worker.credits.reconcile import reconcile_alone

    account("r", "sk-r")
    pay("r", "p-r", 500, BASE)
    tamper("UPDATE account_totals SET paid_usd = 6 WHERE user_id = 'r'")
    report = reconcile_alone(fix=False)
    assert [m.user_id for m in report.ledger_audit.mismatches] == ["r"]
    shown = CliRunner().invoke(cli, ["reconcile"]).output.splitlines()
    assert any("ledger audit mismatches" in line and line.split()[-2:] == ["1", "│"] for line in shown), shown


def test_the_migration_fills_the_totals_from_an_existing_ledger():
    """A database at 0006 with history: after 0009, account_balances shows the very same rows."""
    import psycopg
    from alembic import command
    from alembic.config import Config

    from tests.conftest import PG_ADMIN_URL, TEST_DB
    from worker.migrate import ROOT

    name = f"{TEST_DB}_0009"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = url.replace("postgresql://", "postgresql+psycopg://")
    try:
        command.upgrade(config, "0006")
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO accounts (user_id, key_alias, key_hash, key_encrypted) "
                         "SELECT 'u' || i, 'a' || i, md5(i::text), 'x' FROM generate_series(1, 5) i")
            conn.execute(
                "INSERT INTO ledger_entries (user_id, kind, idempotency_key, grant_key, credit_usd, paid_usd, "
                "occurred_at) SELECT 'u' || i, 'payment', 'p' || i || ':' || k, 'p' || i || ':' || k, 10, 5 + k % 3, "
                "now() FROM generate_series(1, 5) i, generate_series(1, 4) k")
            conn.execute(
                "INSERT INTO ledger_entries (user_id, kind, idempotency_key, grant_key, credit_usd, paid_usd, "
                "occurred_at) SELECT 'u' || i, 'refund', 'r' || i, 'p' || i || ':2', -3, -1.5, now() "
                "FROM generate_series(1, 5) i")
            conn.execute(
                "INSERT INTO ledger_entries (user_id, kind, idempotency_key, spent_usd, occurred_at) "
                "SELECT 'u' || (1 + g % 5), 'usage', 's' || g, 0.0137 * (g % 4), now() - g * interval '1 min' "
                "FROM generate_series(1, 3000) g")
            before = conn.execute("SELECT * FROM account_balances ORDER BY user_id").fetchall()
        command.upgrade(config, "heads")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT * FROM account_balances ORDER BY user_id").fetchall() == before
            assert conn.execute("SELECT sum(entries) FROM account_totals").fetchone() == (3025,)
            # All usage before the payments: in each account's first segment, none after them.
            segments = conn.execute("SELECT user_id, starts_at = '-infinity', spent_usd FROM account_usage_segments "
                                    "ORDER BY 1, 2").fetchall()
            usage = conn.execute("SELECT user_id, sum(spent_usd) FROM ledger_entries WHERE kind = 'usage' "
                                 "GROUP BY 1 ORDER BY 1").fetchall()
            assert segments == [row for u, spent in usage for row in ((u, False, 0), (u, True, spent))]
        command.downgrade(config, "0006")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT * FROM account_balances ORDER BY user_id").fetchall() == before
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_an_account_with_expiring_credit_burns_it_first_in_its_savings(proxy):
    """A payment (10 credit for 5), then a free promo of 5 expiring in a week, then 3 spent: the
    promo burns first (0008's order), so all 3 saved; oldest-first would say 1.5. The audit
    agrees: such an account's savings are replayed from the ledger at read, not stored."""
    from worker.credits import ledger

    account("eve", "sk-eve-0001")
    pay("eve", "eve-pay", 500, BASE)
    with session_scope() as session:
        ledger.record(session, user_id="eve", kind="promo", idempotency_key="promo:1:eve", grant_key="promo:1:eve",
                      credit=Decimal(5), occurred_at=BASE + timedelta(hours=1),
                      expires_at=BASE + timedelta(days=7))
    spend([("eve-r1", "sk-eve-0001", Decimal(3))], BASE + timedelta(hours=2))
    with session_scope() as session:
        savings = session.execute(text("SELECT savings_usd FROM account_balances WHERE user_id = 'eve'")).scalar()
    assert savings == Decimal(3)
    assert not audit_all().mismatches


def test_segment_replay_of_expiring_credit_matches_the_entry_by_entry_replay(proxy):
    """grant_burn as 0009 redefines it (usage a segment between two grant events at a time)
    against 0008's, which reads every usage entry: the same burn, to the digit, over random
    histories of expiring promos, payments, refunds, adjustments and spend, with spend filed late
    and grants backdated, so that segments are split after their usage is in."""
    from worker.credits import ledger

    original = import_module("migrations.versions.0008_credit_tools").GRANT_BURN.replace(
        "CREATE FUNCTION grant_burn(", "CREATE OR REPLACE FUNCTION pg_temp.grant_burn_by_entry(", 1)
    rnd = random.Random(9)
    users = {f"x{i}": f"sk-x{i}" for i in range(4)}
    for user_id, key in users.items():
        account(user_id, key)
    at, payments, n = BASE, {u: [] for u in users}, 0
    for step in range(200):
        user_id = rnd.choice(sorted(users))
        at += timedelta(minutes=rnd.choice([1, 7, 30, 95]))
        roll = rnd.random()
        late = at - timedelta(minutes=rnd.choice([0, 0, 0, 0, 50, 400]))  # filed after later events
        if roll < 0.12:
            with session_scope() as session:
                ledger.record(session, user_id=user_id, kind="promo", idempotency_key=f"promo:{step}",
                              grant_key=f"promo:{step}", credit=Decimal(rnd.choice([1, 3, 5])), occurred_at=late,
                              expires_at=late + timedelta(hours=rnd.choice([1, 3, 12])))
        elif roll < 0.24:
            pay(user_id, f"p{step}", rnd.choice([500, 1500]), late)
            payments[user_id].append(f"p{step}")
        elif roll < 0.28 and payments[user_id]:
            try:
                refund(user_id, f"r{step}", rnd.choice(payments[user_id]), 100, at)
            except Rejected:
                pass
        elif roll < 0.31:
            with session_scope() as session:
                ledger.record(session, user_id=user_id, kind="adjustment", idempotency_key=f"adjustment:{step}",
                              credit=Decimal(rnd.choice([-1, 2])), occurred_at=late)
        else:
            rows = []
            for _ in range(rnd.randint(1, 4)):
                n += 1
                rows.append((f"x-req-{n}", users[user_id], Decimal(rnd.randint(1, 90_000)) / Decimal(100_000)))
            spend(rows, late)
    with session_scope() as session:
        session.execute(text(original))
        for user_id in users:
            until = {"u": user_id, "t": at + timedelta(days=1)}
            segments = session.execute(text("SELECT * FROM grant_burn(:u, :t) ORDER BY 1"), until).all()
            by_entry = session.execute(text("SELECT * FROM pg_temp.grant_burn_by_entry(:u, :t) ORDER BY 1"),
                                       until).all()
            assert segments == by_entry and segments
    assert audit_all().mismatches == []
