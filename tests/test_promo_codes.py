"""Promo codes: stored hashed, credited once per (code, user), within expiry and max uses, also in a rush."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text
from typer.testing import CliRunner

from tasks.credit_tools import redeem
from tasks.signup import signup
from tests.fixtures import wait_for
from worker.cli.main import app
from worker.credits import ledger
from worker.credits.promo_codes import code_hash
from worker.db import session_scope
from worker.models import DeadLetter, LedgerEntry, PromoCode
from worker.producer import publish_redeem, shown

USER = "dave@example.com"
AT = "2026-11-22T10:00:00Z"
runner = CliRunner()


def cli(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.output)
    return result


def create(*args: str) -> list[str]:
    made = json.loads(cli("codes", "create", "--amount-usd", "5", *args, "--json").stdout)
    return [m["code"] for m in made]


def redemption(code: str, user_id: str = USER, at: str = AT) -> dict[str, Any]:
    return {"user_id": user_id, "code": code, "redeemed_at": at}


def credited(user_id: str = USER) -> Decimal:
    with session_scope() as session:
        return ledger.credited_total(session, user_id)


def promos() -> list[LedgerEntry]:
    with session_scope() as session:
        return list(session.execute(select(LedgerEntry).where(LedgerEntry.kind == "promo")).scalars())


def reasons() -> list[str]:
    with session_scope() as session:
        return list(session.execute(select(DeadLetter.reason).order_by(DeadLetter.id)).scalars())


def test_codes_are_printed_once_and_stored_only_hashed(proxy):
    codes = create("--count", "3", "--prefix", "welcome")
    assert len(set(codes)) == 3 and all(c.startswith("WELCOME-") for c in codes)
    plain = cli("codes", "create", "--amount-usd", "1", "--count", "2").stdout.split()
    assert len(plain) == 2
    with session_scope() as session:
        stored = session.execute(text("SELECT row_to_json(p)::text FROM promo_codes p")).scalars().all()
        assert len(stored) == 5 and not any(c in row for c in codes + plain for row in stored)
        assert session.execute(select(PromoCode.code_hash)).scalars().all()[0] == code_hash(codes[0])
    listed = json.loads(cli("codes", "list", "--json").stdout)
    assert [(c["uses"], c["state"]) for c in listed] == [(0, "active")] * 5
    assert "promo codes" in cli("codes", "list").stdout


def test_redeem_credits_once_per_code_and_user_and_pushes_the_budget(proxy):
    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": AT}})
    (code,) = create()
    redeem.apply(kwargs={"event": redemption(code.lower().replace("-", " "))})  # as a user might type it
    assert credited() == 7 and proxy.key_by_alias(f"test-{USER}")["max_budget"] == 7
    redeem.apply(kwargs={"event": redemption(code)})  # the same redemption delivered again
    assert not reasons()
    redeem.apply(kwargs={"event": redemption(code, at="2026-11-23T10:00:00Z")})  # typed a second time
    assert reasons() == ["already redeemed by this user"] and credited() == 7 and len(promos()) == 1
    rows = json.loads(cli("ledger", USER, "--json").stdout)
    assert rows[0]["kind"] == "promo" and rows[0]["reason"].startswith("promo code PROMO-...")
    with session_scope() as session:
        assert ledger.balance(session, USER).savings_usd == 0
    assert json.loads(cli("codes", "list", "--json").stdout)[0]["uses"] == 1


def test_unknown_expired_and_used_up_codes_are_dead_lettered(proxy):
    redeem.apply(kwargs={"event": redemption("PROMO-NOPE-NOPE-NOPE-NOPE")})
    expired = datetime.now(UTC) - timedelta(minutes=1)
    (old,) = create("--expires", expired.isoformat())
    # A claimed time before the expiry does not revive the code: the worker's clock decides.
    redeem.apply(kwargs={"event": redemption(old, at=(expired - timedelta(days=1)).isoformat())})
    (live,) = create("--expires", (datetime.now(UTC) + timedelta(days=1)).isoformat())
    redeem.apply(kwargs={"event": redemption(live)})
    (once,) = create("--max-uses", "1")
    redeem.apply(kwargs={"event": redemption(once, "first")})
    redeem.apply(kwargs={"event": redemption(once, "second")})
    assert reasons() == ["unknown code", "expired", "used up"]
    assert credited(USER) == 5 and credited("first") == 5 and credited("second") == 0
    states = {c["hint"][-4:]: c["state"] for c in json.loads(cli("codes", "list", "--json").stdout)}
    assert states == {old[-4:]: "expired", live[-4:]: "active", once[-4:]: "used up"}


def test_expiring_credit_is_dated_by_the_worker_not_by_the_claim(proxy):
    """Issue 20, 1: a redemption dated years back would have made its credit expire at once and
    burn the account's old usage, turning expiring credit into credit spent long ago."""
    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": "2020-01-01T00:00:00Z"}})
    with session_scope() as session:
        ledger.record(session, user_id=USER, kind="usage", idempotency_key="spend:old", spent=Decimal(2),
                      occurred_at=datetime(2020, 1, 2, tzinfo=UTC))
    (code,) = create("--credit-expires-days", "1")
    before = datetime.now(UTC)
    redeem.apply(kwargs={"event": redemption(code, at="2020-01-01T12:00:00Z")})
    (promo,) = promos()
    assert promo.occurred_at >= before and promo.expires_at >= before + timedelta(days=1)
    assert promo.details["redeemed_at"] == "2020-01-01T12:00:00+00:00"  # the claim, recorded
    with session_scope() as session:
        balance = ledger.balance(session, USER)
    assert (balance.credited_usd, balance.remaining_usd) == (Decimal(7), Decimal(5))


def test_a_redemption_before_the_signup_makes_no_key(proxy):
    (code,) = create()
    redeem.apply(kwargs={"event": redemption(code, "ghost")})
    assert credited("ghost") == 5 and proxy.key_by_alias("test-ghost") is None
    signup.apply(kwargs={"event": {"user_id": "ghost", "occurred_at": AT}})
    assert proxy.key_by_alias("test-ghost")["max_budget"] == 7  # made once, at the full total


def test_redemptions_are_signed_like_every_other_event(monkeypatch, proxy):
    from worker.settings import get_settings

    monkeypatch.setenv("EVENT_SIGNING_SECRET", "s" * 32)
    get_settings.cache_clear()
    (code,) = create()
    redeem.apply(kwargs={"event": redemption(code, "mallory")})  # pushed to Redis by hand, unsigned
    assert reasons() == ["missing signature (EVENT_SIGNING_SECRET is set, so payments, refunds, adjustments "
                         "and redemptions must be signed)"]
    assert credited("mallory") == 0
    from worker import signing

    signed = {**redemption(code, "mallory"), "signature": signing.sign(redemption(code, "mallory"), "s" * 32)}
    redeem.apply(kwargs={"event": signed})
    assert credited("mallory") == 5


def test_many_users_redeeming_one_code_at_once_never_pass_max_uses(proxy):
    (code,) = create("--max-uses", "5")
    users = [f"rush-{n}" for n in range(20)]
    start = threading.Barrier(len(users))

    def go(user_id: str) -> None:
        start.wait()
        redeem.apply(kwargs={"event": redemption(code, user_id)})

    with ThreadPoolExecutor(len(users)) as pool:
        list(pool.map(go, users))
    assert len(promos()) == 5 and reasons() == ["used up"] * 15
    with session_scope() as session:
        assert session.execute(select(PromoCode.uses)).scalar() == 5
    assert sum(credited(u) for u in users) == 25


def test_cli_refuses_bad_options_in_one_line(proxy):
    for args, words in [(("--amount-usd", "x"), "not a decimal"), (("--amount-usd", "-1"), "must be positive"),
                        (("--amount-usd", "1", "--expires", "2026-12-31T00:00:00"), "UTC offset"),
                        (("--amount-usd", "1", "--prefix", "no-dash"), "prefix")]:
        result = cli("codes", "create", *args, code=1)
        assert result.stderr.startswith("error: ") and words in result.stderr, result.stderr


def test_redeem_through_a_real_worker_with_the_code_masked_in_kwargsrepr(workers, proxy, redis_client):
    signup.apply(kwargs={"event": {"user_id": USER, "occurred_at": AT}})
    (code,) = create()
    assert code not in shown(redemption(code))
    workers.start()
    now = datetime.now(UTC)
    ids = [publish_redeem(redemption(code, at=now.isoformat())),
           publish_redeem(redemption(code, at=(now + timedelta(seconds=1)).isoformat()))]
    wait_for(lambda: all(f"[{i}] succeeded" in workers.output() for i in ids), 60, "both redemptions handled")
    assert credited() == 7 and proxy.key_by_alias(f"test-{USER}")["max_budget"] == 7
    assert reasons() == ["already redeemed by this user"]
    assert code not in workers.output()


def test_dead_letters_show_no_promo_code_but_replay_still_has_it(proxy):
    """Issue 20, 8: `dead-letters show` printed a redemption's code, a bearer credential."""
    (code,) = create("--max-uses", "1")
    redeem.apply(kwargs={"event": redemption(code, "first")})
    redeem.apply(kwargs={"event": redemption(code, "second")})  # used up: dead-lettered
    with session_scope() as session:
        letter_id = session.execute(select(DeadLetter.id)).scalar_one()
    shown_row = json.loads(cli("dead-letters", "show", str(letter_id), "--json").stdout)
    assert code not in json.dumps(shown_row) and '"code": "***"' in shown_row["payload"]
    assert code not in cli("dead-letters", "list").stdout
    with session_scope() as session:
        assert code in session.get(DeadLetter, letter_id).payload  # kept for the replay
