"""The committed JSON Schemas in schemas/json/ are exactly what the event models generate."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from schemas import export
from schemas.events import EVENT_MODELS
from tests.fixtures import ROOT


@pytest.mark.parametrize("name", sorted(EVENT_MODELS))
def test_committed_schema_matches_the_model(name):
    path = export.path_for(name)
    assert path.exists(), f"{path} is missing: run python -m schemas.export"
    committed = path.read_text(encoding="utf-8")
    assert committed == export.render(name, EVENT_MODELS[name]), (
        f"{path.relative_to(ROOT)} differs from schemas/events.py: run python -m schemas.export and commit it"
    )


def test_no_stray_schema_files():
    committed = {p.name for p in export.OUT_DIR.glob("*.json")}
    assert committed == {f"{name}.schema.json" for name in EVENT_MODELS}


@pytest.mark.parametrize(
    ("name", "required"),
    [
        ("signup", ["user_id", "occurred_at"]),
        ("payment", ["reference", "user_id", "amount_minor", "currency", "paid_at"]),
        ("refund", ["refund_reference", "payment_reference", "amount_minor", "currency", "refunded_at"]),
        ("adjustment", ["user_id", "amount_usd", "reason", "reference", "actor", "occurred_at"]),
        ("redeem", ["user_id", "code", "redeemed_at"]),
    ],
)
def test_schema_states_what_a_producer_must_send(name, required):
    doc = json.loads(export.path_for(name).read_text(encoding="utf-8"))
    assert doc["$schema"] == export.DIALECT and doc["type"] == "object"
    assert doc["additionalProperties"] is False  # unknown fields are rejected by the worker
    assert doc["required"] == required


def test_check_mode_reports_drift(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "OUT_DIR", tmp_path)
    assert export.main(["--check"]) == 1  # nothing written yet
    assert export.main([]) == 0
    assert export.main(["--check"]) == 0
    export.path_for("signup").write_text("{}\n", encoding="utf-8")
    assert export.stale() == [export.path_for("signup")]


def test_module_runs_as_a_command():
    done = subprocess.run([sys.executable, "-m", "schemas.export", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
