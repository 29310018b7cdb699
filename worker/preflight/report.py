"""Every check, in the order a fix is best made: settings first, then what they point at."""

from __future__ import annotations

from worker.preflight import config
from worker.preflight.broker import broker
from worker.preflight.database import database
from worker.preflight.findings import Finding
from worker.preflight.proxy import proxy


def run_all() -> list[Finding]:
    s = config.load()
    if isinstance(s, Finding):
        return [s]  # nothing else can be read right without valid settings
    found = [config.settings(s), database(s.database_url), broker(s.redis_url)]
    if s.litellm_master_key is not None:
        found += proxy(s.litellm_base_url, s.litellm_master_key.get_secret_value(), s.proxy_timeout_s,
                       s.litellm_database_url)
    found += [config.signing(s), config.samples(s)]
    return found
