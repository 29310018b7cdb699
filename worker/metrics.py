"""Prometheus metrics on METRICS_PORT, served by the worker's main process.

Money figures are read from the database at scrape time (worker.figures), so they are right even
straight after a restart and need no bookkeeping in the tasks. Proxy latency and errors are
observed where the requests happen, in the pool's child processes; prometheus_client's
multiprocess mode (one file per process under PROMETHEUS_MULTIPROC_DIR) adds them up for the
scrape, which is why `prepare` must run in the main process before the pool forks.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from worker import figures
from worker.settings import get_settings

log = logging.getLogger(__name__)
_proxy_seconds: Histogram | None = None
_proxy_errors: Counter | None = None
_reconcile_key_errors: Counter | None = None


class LedgerCollector(Collector):
    """Reads worker.figures on every scrape over its own unpooled connection, so no socket of
    this process is ever inherited by a forked pool child."""

    def __init__(self, database_url: str):
        self._url = database_url
        self._engine: Engine | None = None

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("credits_metrics_db_up", "1 if the database answered this scrape.")
        try:
            if self._engine is None:
                self._engine = create_engine(self._url, poolclass=NullPool, connect_args={"connect_timeout": 5})
            with self._engine.connect() as conn:
                f = figures.read(conn)
        except Exception:  # noqa: BLE001 - a scrape must answer even when the database does not
            log.warning("metrics: could not read figures", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        lag = GaugeMetricFamily("credits_spend_sync_lag_seconds", "Now minus the spend sync cursor.")
        if f.sync_lag_s is not None:
            lag.add_metric([], f.sync_lag_s)
        yield lag
        if f.rows_ingested is not None:
            yield CounterMetricFamily("credits_spend_rows_ingested", "Spend-log rows stored.", f.rows_ingested)
        yield GaugeMetricFamily("credits_spend_rows_fetched_last_hour",
                                "Spend-log rows the sync fetched from its source in the last hour.",
                                f.rows_fetched_hour)
        yield GaugeMetricFamily("credits_spend_rows_stored_last_hour",
                                "Spend-log rows the sync stored in the last hour.", f.rows_stored_hour)
        yield CounterMetricFamily("credits_usage_debited_usd", "Usage debited from the ledger, in USD.",
                                  float(f.usage_debited_usd))
        yield GaugeMetricFamily("credits_budget_drift_accounts",
                                "Accounts whose pushed max_budget differs from the ledger's credited total.",
                                f.drift_accounts)
        if f.audit_mismatches is not None:
            yield GaugeMetricFamily("credits_audit_mismatches",
                                    "Accounts whose running totals differed from the ledger when last audited.",
                                    f.audit_mismatches)
        letters = GaugeMetricFamily("credits_dead_letters_open", "Open dead letters by task and kind of reason.",
                                    labels=["task", "reason"])
        for (task, kind), n in sorted(f.dead_letters.items()):
            letters.add_metric([task, kind], n)
        yield letters


def observe(endpoint: str, seconds: float, outcome: str) -> None:
    """A worker.proxy observer: one request's latency, and an error count when it failed."""
    if _proxy_seconds is None or _proxy_errors is None:
        return
    _proxy_seconds.labels(endpoint).observe(seconds)
    if outcome != "ok":
        _proxy_errors.labels(endpoint).inc()


def reconcile_key_error(check: str) -> None:
    """One key reconcile could not check or repair (`check`: budget or spend); the run went on."""
    if _reconcile_key_errors is not None:
        _reconcile_key_errors.labels(check).inc()


def prepare() -> str:
    """Main process, before the pool forks: a clean multiprocess directory and the proxy metrics
    (worker.app registers `observe` with the proxy client).

    A PROMETHEUS_MULTIPROC_DIR given by the operator must belong to this worker alone: it is
    emptied here, at every start."""
    global _proxy_seconds, _proxy_errors, _reconcile_key_errors
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = tempfile.mkdtemp(prefix="credits-metrics-")
        atexit.register(shutil.rmtree, directory, True)  # runs in the main process only; children _exit
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    Path(directory).mkdir(parents=True, exist_ok=True)
    for stale in Path(directory).glob("*.db"):  # files of a previous run would add old counts
        stale.unlink()
    # The value class is chosen when prometheus_client is imported; choose again now that the
    # directory is set, in case something imported it earlier.
    values.ValueClass = values.get_value_class()
    _proxy_seconds = Histogram("credits_proxy_request_seconds", "LiteLLM proxy request latency by endpoint.",
                               ["endpoint"], registry=None)
    _proxy_errors = Counter("credits_proxy_request_errors", "Failed LiteLLM proxy requests by endpoint.",
                            ["endpoint"], registry=None)
    _reconcile_key_errors = Counter("credits_reconcile_key_errors",
                                    "Keys a reconcile run could not check or repair, by check.",
                                    ["check"], registry=None)
    return directory


def serve(port: int, addr: str = "0.0.0.0") -> Any:
    """Serve the merged per-process metrics and the database figures on `port`."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(LedgerCollector(get_settings().database_url))
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    log.info("metrics served on port %d", port)
    return server
