"""The door's Prometheus counters, in a registry of its own (served at /metrics by the door)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

REGISTRY = CollectorRegistry(auto_describe=True)
WEBHOOKS = Counter("credits_webhooks", "Provider webhooks received, by provider and outcome.",
                   ["provider", "outcome"], registry=REGISTRY)
EVENTS = Counter("credits_api_events", "Events the web app posted, by kind and outcome.",
                 ["kind", "outcome"], registry=REGISTRY)
