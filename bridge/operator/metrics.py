"""Prometheus metrics: counters the delivery code increments, and gauges read from the store.

`REGISTRY` (a dedicated `CollectorRegistry`, not the client's global one, so importing a library
that registers its own metrics never pollutes ours) holds the process's own counters:
`API_CALLS` (by `result`), `API_LATENCY` and `RULE_RELOAD_FAILURES`. Counts that several
processes contribute to — messages by outcome, outbox depth — are not counted in memory but read
from the store at scrape time by `StoreCollector`, so a message processed by `mailbridge ingest`
in another process is counted too. `exposition(store, runtime)` renders both, in the text format.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from bridge.models import Outcome
from bridge.operator.status import RuntimeStatus, health
from bridge.store.db import Store

# The *_created series double every counter for no use here (process-wide switch).
disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=True)


class _Counter(Counter):
    """A Counter whose label values may be str enums: `labels(Verdict.CREATED)` is "created",
    not "Verdict.CREATED" (str() of a str enum on Python 3.11)."""

    def labels(self, *values: Any, **named: Any) -> Any:
        return super().labels(*(getattr(v, "value", v) for v in values),
                              **{k: getattr(v, "value", v) for k, v in named.items()})


# result: the PSA client's verdict — created | updated | closed | suppressed | not_found |
# conflict | auth | rejected | transient — one word per error class of SPEC §3.6, so an alert
# rule can tell "PSA down" (transient) from "credentials refused" (auth).
API_CALLS = _Counter("mailbridge_api_calls", "Calls to the PSA/webhook API by result",
                    ["result"], registry=REGISTRY)
API_LATENCY = Histogram("mailbridge_api_latency_seconds", "Duration of PSA/webhook API calls",
                        buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                        registry=REGISTRY)
RULE_RELOAD_FAILURES = Counter("mailbridge_rule_reload_failures",
                               "Rule-set reloads refused because the new set was invalid",
                               registry=REGISTRY)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class StoreCollector(Collector):
    """Gauges read from the store (and the daemon's RuntimeStatus) when scraped.

    Must be collected on the thread that owns `store`."""

    def __init__(self, store: Store | None, runtime: RuntimeStatus | None = None):
        self.store = store
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        up = GaugeMetricFamily("mailbridge_store_up", "1 when the store could be read")
        try:
            metrics = list(self._from_store(now))
        except Exception:
            # Report the failure as a value: a scrape that errors hides every other series.
            metrics = []
        up.add_metric([], 1 if metrics else 0)
        yield up
        yield from metrics
        if self.runtime is not None:
            yield from self._from_runtime(self.runtime)

    def _from_store(self, now: float) -> Iterator[Metric]:
        if self.store is None:
            raise RuntimeError("no store")
        store = self.store
        by_outcome = store.outcome_counts()
        m = GaugeMetricFamily("mailbridge_messages",
                              "Messages in the store by final outcome (SPEC 3.8)",
                              labels=["outcome"])
        for outcome in Outcome:  # every outcome, zeros included: rate() needs the series
            m.add_metric([outcome.value], by_outcome.get(outcome.value, 0))
        yield m
        by_state = store.unfinished_message_counts()
        m = GaugeMetricFamily("mailbridge_messages_waiting",
                              "Messages not finished yet, by state", labels=["state"])
        for state in ("staged", "processing", "pending"):
            m.add_metric([state], by_state.get(state, 0))
        yield m
        outbox = store.outbox_state_counts()
        m = GaugeMetricFamily("mailbridge_outbox", "Outbox rows by state", labels=["state"])
        for state in ("pending", "in_flight", "dead", "done"):
            m.add_metric([state], outbox.get(state, 0))
        yield m
        oldest = store.oldest_unsent_at()
        yield GaugeMetricFamily("mailbridge_outbox_oldest_age_seconds",
                                "Age of the oldest undelivered outbox row (0 when empty)",
                                value=max(0.0, now - oldest) if oldest else 0.0)
        yield GaugeMetricFamily("mailbridge_open_tickets", "Open correlations (tickets)",
                                value=store.open_ticket_count())

    def _from_runtime(self, rt: RuntimeStatus) -> Iterator[Metric]:
        conn = GaugeMetricFamily("mailbridge_source_connected",
                                 "1 while the source (IMAP mailbox, Maildir) is connected",
                                 labels=["source"])
        idle = GaugeMetricFamily("mailbridge_source_idle", "1 while an IMAP IDLE is open",
                                 labels=["source"])
        poll = GaugeMetricFamily("mailbridge_source_last_poll_timestamp_seconds",
                                 "When the source was last polled", labels=["source"])
        for src in list(rt.sources.values()):
            conn.add_metric([src.name], int(src.connected))
            idle.add_metric([src.name], int(src.idle))
            if src.last_poll:
                poll.add_metric([src.name], src.last_poll)
        yield from (conn, idle, poll)
        yield GaugeMetricFamily("mailbridge_psa_auth_ok",
                                "0 when the PSA refused the credentials, else 1",
                                value=0 if rt.psa_auth == "refused" else 1)
        yield GaugeMetricFamily("mailbridge_ruleset_reload_error",
                                "1 while the last rule reload failed (old set in force)",
                                value=1 if rt.ruleset_error else 0)
        alerts = GaugeMetricFamily("mailbridge_admin_alert", "1 per admin alert raised",
                                   labels=["kind"])
        for alert in list(rt.admin_alerts):
            alerts.add_metric([alert.kind], 1)
        yield alerts
        yield GaugeMetricFamily("mailbridge_start_time_seconds", "When the daemon started",
                                value=rt.started_at)
        ok, _ = health(rt, self.store)
        yield GaugeMetricFamily("mailbridge_ready", "1 when /healthz says ready", value=int(ok))


class _Both:
    """The process registry plus a store collector, as one thing generate_latest can walk."""

    def __init__(self, *parts: CollectorRegistry | Collector):
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


def exposition(store: Store | None, runtime: RuntimeStatus | None = None) -> bytes:
    """The /metrics body. Run it on the thread that owns `store` (None: the store could not be
    opened; the process counters and `mailbridge_store_up 0` are still served)."""
    both = _Both(REGISTRY, StoreCollector(store, runtime))
    return generate_latest(both)
