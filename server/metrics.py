"""Prometheus metrics of one server process (GET /metrics).

Two kinds, so the write path pays almost nothing:

* events counted where they happen (updates by source and outcome, batch
  sizes, apply latency, HTTP answers): prometheus-client counters and
  histograms, touched once per batch or request, never once per update;
* state the service keeps anyway (AMQP counters and backlog, feed
  subscribers, Redis reconnects, retention purges): read when Prometheus
  scrapes, by a collector (StateCollector), so nothing is counted twice.

Each process has its own registry.  With --workers, a scrape of the shared
port reaches whichever worker takes it; --metrics-port P serves each
process's /metrics alone on port P + its index, so that Prometheus scrapes
every worker (the ``instance`` label tells them apart; progress_worker
names the worker).  prometheus-client's multiprocess mode is not used: the
state read at scrape time (StateCollector) lives in each process.
"""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sca_progress.engine import APPLIED, STALE

#: Content-Type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class Metrics:
    def __init__(self, service) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.updates = Counter("progress_updates", "Updates handled, by source (rest, amqp) and outcome "
                               "(applied, stale: older ts than the node's; refused: see progress_refused)",
                               ["source", "outcome"], registry=r)
        self.refused = Counter("progress_refused", "Updates refused (REST batch items and single posts, AMQP "
                               "messages), by source and error code", ["source", "code"], registry=r)
        self.batch = Histogram("progress_batch_updates", "Updates per engine call, by source",
                               ["source"], buckets=_BATCH_BUCKETS, registry=r)
        self.apply_seconds = Histogram("progress_apply_seconds", "Time of one engine call (one Redis round "
                                       "trip of scripts), by source", ["source"], buckets=_SECONDS_BUCKETS,
                                       registry=r)
        self.requests = Counter("progress_http_requests", "HTTP answers, by method, route, status and error code",
                                ["method", "route", "status", "code"], registry=r)
        self.request_seconds = Histogram("progress_http_request_duration_seconds", "HTTP request time, by route",
                                         ["route"], buckets=_SECONDS_BUCKETS, registry=r)
        self.redis_errors = Counter("progress_redis_errors", "Calls that found Redis unavailable (the caller "
                                    "got a 503, or the batch was held and retried)", registry=r)
        self._children: dict = {}
        r.register(StateCollector(service))
        index, count = getattr(service, "worker", (0, 1))
        info = Gauge("progress_worker", "1; labels: this process's index among --workers, their count, its pid",
                     ["worker", "workers", "pid"], registry=r)
        info.labels(str(index), str(count), str(os.getpid())).set(1)

    def observe_apply(self, source: str, results: list, seconds: float) -> None:
        """One engine call's outcomes (called once per call)."""
        n = len(results)
        applied = results.count(APPLIED)
        stale = results.count(STALE)
        self._child(self.updates, source, "applied").inc(applied)
        if stale:
            self._child(self.updates, source, "stale").inc(stale)
        if applied + stale < n:
            codes: dict[str, int] = {}
            for r in results:
                if r is not APPLIED and r is not STALE:
                    code = getattr(r, "code", "error")
                    codes[code] = codes.get(code, 0) + 1
            self._child(self.updates, source, "refused").inc(n - applied - stale)
            for code, count in codes.items():
                self._child(self.refused, source, code).inc(count)
        self._child(self.batch, source).observe(n)
        self._child(self.apply_seconds, source).observe(seconds)

    def refuse(self, source: str, code: str, count: int = 1) -> None:
        """Updates refused before they reached the engine (bad JSON, bad items, AMQP parse)."""
        self._child(self.updates, source, "refused").inc(count)
        self._child(self.refused, source, code).inc(count)

    def observe_request(self, method: str, route: str, status: int, code: str, seconds: float) -> None:
        self._child(self.requests, method, route, str(status), code).inc()
        self._child(self.request_seconds, route).observe(seconds)

    def _child(self, metric, *labels):
        """metric.labels(*labels), cached: labels() takes a lock and builds a tuple key."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    async def exposition(self) -> bytes:
        """The text format; first refreshes what needs a round trip (the AMQP backlog)."""
        link = self.service.link
        if link is not None and link.connected:
            await link.backlog()
        return generate_latest(self.registry)


class StateCollector:
    """Reads, at scrape time, the counters and state the service keeps anyway."""

    def __init__(self, service) -> None:
        self.service = service

    def collect(self):
        s = self.service
        batcher, link, hub = s.batcher, s.link, s.hub
        if link is not None:
            yield _gauge("progress_amqp_connected", "1 while consuming from the broker", 1 if link.connected else 0)
            backlog = link.cached_backlog()
            if backlog is not None:
                yield _gauge("progress_amqp_backlog", "Messages ready in the intake queue (not yet delivered)",
                             backlog)
        if batcher is not None:
            yield _gauge("progress_amqp_unacknowledged", "Messages delivered to this process and not yet "
                         "acknowledged (waiting in the batcher or being applied)", batcher.in_hand())
            yield _counter("progress_amqp_messages", "AMQP messages acknowledged, by outcome", "outcome",
                           {"applied": batcher.applied, "dead_lettered": batcher.dead_lettered})
            yield _counter("progress_amqp_redeliveries", "Deliveries the broker marked as redelivered", None,
                           batcher.redeliveries)
            yield _counter("progress_amqp_batches", "Batches of AMQP messages applied", None, batcher.batches)
        if hub is not None:
            subscribers = {"socketio": 0, "sse": 0}
            for sub in hub.all_subscriptions():
                transport = getattr(sub.sink, "transport", "other")
                subscribers[transport] = subscribers.get(transport, 0) + 1
            yield _gauge("progress_feed_subscribers", "Live-feed subscriptions, by transport", subscribers,
                         "transport")
            yield _counter("progress_feed_messages", "Live-feed events sent to subscribers, by transport",
                           "transport", dict(hub.sent))
        link = s.engine.scripts.link if s.engine is not None else None
        if link is not None:
            yield _counter("progress_redis_connects", "Connections the engine's Redis link opened (more than "
                           "one: reconnects)", None, link.connects)
            yield _counter("progress_redis_connection_failures", "Times the engine's Redis link failed "
                           "(lost connection, timeout, refused)", None, link.failures)
        retention = getattr(s, "retention", None)
        if retention is not None:
            yield _counter("progress_retention_purged_trees", "Trees purged by retention", None, retention.purged)


def _gauge(name: str, doc: str, value, label: str | None = None) -> GaugeMetricFamily:
    if label is None:
        return GaugeMetricFamily(name, doc, value=value)
    g = GaugeMetricFamily(name, doc, labels=[label])
    for k, v in value.items():
        g.add_metric([k], v)
    return g


def _counter(name: str, doc: str, label: str | None, value) -> CounterMetricFamily:
    if label is None:
        return CounterMetricFamily(name, doc, value=value)
    c = CounterMetricFamily(name, doc, labels=[label])
    for k, v in value.items():
        c.add_metric([k], v)
    return c
