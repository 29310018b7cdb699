"""Settings that would cost users money are refused at load, with one line naming the setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.settings import get_settings


def refusal(monkeypatch, capsys, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    with pytest.raises(SystemExit) as stopped:
        get_settings()
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


def test_a_spend_sync_start_in_the_future_is_refused(monkeypatch, capsys):
    """Issue 20, 4: the cursor starts there, and every grant expiring before it would be settled
    before its spend was read."""
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert refusal(monkeypatch, capsys, SPEND_SYNC_START=ahead).startswith("invalid settings: SPEND_SYNC_START: ")
    monkeypatch.setenv("SPEND_SYNC_START", "2026-01-01T00:00:00")  # past, no offset: UTC
    get_settings.cache_clear()
    assert get_settings().spend_sync_start == datetime(2026, 1, 1, tzinfo=UTC)


def test_a_plan_currency_other_than_usd_is_refused(monkeypatch, capsys):
    """Issue 20, 8: 5000 NGN would have been credited as 10,000 USD of key budget."""
    err = refusal(monkeypatch, capsys, PLAN_CURRENCY="NGN")
    assert err.startswith("invalid settings: PLAN_CURRENCY: ") and "only USD" in err
