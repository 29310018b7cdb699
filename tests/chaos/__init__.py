"""Chaos suite: the whole system (PostgreSQL, Redis, real workers, the stand-in over HTTP) under faults.

Run with `./scripts/test -m chaos tests/chaos`; figures go to docs/reliability-results/, and
`uv run python -m tests.chaos.report` renders them into docs/reliability.md.
"""
