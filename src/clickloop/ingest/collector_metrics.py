"""Prometheus metrics of the HTTP collector (served on ``GET /metrics``).

==============================================  =========  ======================================
metric                                          type       labels
==============================================  =========  ======================================
``clickloop_collector_requests_total``          counter    ``endpoint``, ``status``
``clickloop_collector_request_seconds``         histogram  ``endpoint``
``clickloop_collector_events_received_total``   counter    ``source``
``clickloop_collector_events_accepted_total``   counter    ``source`` (durable on the bus)
``clickloop_collector_events_rejected_total``   counter    ``source``, ``reason``
``clickloop_collector_inflight_requests``       gauge      admitted and not yet answered/durable
``clickloop_collector_max_inflight``            gauge      the configured bound
``clickloop_collector_validate_seconds``        histogram  one validation of a batch
``clickloop_collector_publish_seconds``         histogram  one durable publish to the bus
``clickloop_collector_publish_batch_events``    histogram  events per publish (group commit)
``clickloop_collector_publish_errors_total``    counter
``clickloop_collector_payload_bytes``           histogram  request body size (as sent)
==============================================  =========  ======================================

Received = accepted + rejected, always. Each collector has its own registry,
so several can live in one process (tests).
"""

from __future__ import annotations

import time
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ENDPOINTS: Final = frozenset({"/v1/events", "/v1/p.gif", "/healthz", "/readyz", "/metrics"})
_LATENCY: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BYTES: Final = tuple(float(2**k) for k in range(6, 25, 2))  # 64 B … 16 MiB
_EVENTS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


class CollectorMetrics:
    """The collector's metrics in their own :class:`CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry, source: str, max_inflight: int) -> None:
        self.source = source
        ns = "clickloop_collector"
        self.requests = Counter(
            "requests", "HTTP requests answered", ["endpoint", "status"], namespace=ns,
            registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "request_seconds", "Time from request to response", ["endpoint"], namespace=ns,
            buckets=_LATENCY, registry=registry,
        )  # fmt: skip
        self.received = Counter(
            "events_received", "Records received", ["source"], namespace=ns, registry=registry
        ).labels(source)
        self.accepted = Counter(
            "events_accepted", "Events published durably to the bus", ["source"], namespace=ns,
            registry=registry,
        ).labels(source)  # fmt: skip
        self.rejected = Counter(
            "events_rejected", "Records refused, by reason code", ["source", "reason"],
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.inflight = Gauge(
            "inflight_requests", "Requests admitted and not yet finished", namespace=ns,
            registry=registry,
        )  # fmt: skip
        Gauge(
            "max_inflight", "Requests in flight beyond which the collector answers 503",
            namespace=ns, registry=registry,
        ).set(max_inflight)  # fmt: skip
        self.validate_seconds = Histogram(
            "validate_seconds", "Time to validate one batch (all requests coalesced)",
            namespace=ns, buckets=_LATENCY, registry=registry,
        )  # fmt: skip
        self.publish_seconds = Histogram(
            "publish_seconds", "Time to publish one batch durably", namespace=ns,
            buckets=_LATENCY, registry=registry,
        )  # fmt: skip
        self.batch_events = Histogram(
            "publish_batch_events", "Events per durable publish", namespace=ns,
            buckets=_EVENTS, registry=registry,
        )  # fmt: skip
        self.publish_errors = Counter(
            "publish_errors", "Publishes the bus refused", namespace=ns, registry=registry
        )
        self.payload_bytes = Histogram(
            "payload_bytes", "Request body size in bytes", namespace=ns, buckets=_BYTES,
            registry=registry,
        )  # fmt: skip
        self.totals = {"received": 0, "accepted": 0, "rejected": 0}  # for a summary at exit
        self._rejected: dict[str, Any] = {}
        self._requests: dict[tuple[str, int], Any] = {}
        self._latency: dict[str, Any] = {}

    def count(self, received: int, accepted: int, rejected: dict[str, int]) -> None:
        self.received.inc(received)
        self.totals["received"] += received
        self.totals["accepted"] += accepted
        self.totals["rejected"] += sum(rejected.values())
        if accepted:
            self.accepted.inc(accepted)
        for reason, n in rejected.items():
            child = self._rejected.get(reason)
            if child is None:
                child = self._rejected[reason] = self.rejected.labels(self.source, reason)
            child.inc(n)

    def validated(self, records: int, seconds: float) -> None:
        self.validate_seconds.observe(seconds)

    def published(self, events: int, seconds: float) -> None:
        self.publish_seconds.observe(seconds)
        self.batch_events.observe(events)

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(endpoint, str(status))
        child.inc()
        hist = self._latency.get(endpoint)
        if hist is None:
            hist = self._latency[endpoint] = self.latency.labels(endpoint)
        hist.observe(seconds)


class ObserveRequests:
    """ASGI middleware: count every response by endpoint and status, time it."""

    def __init__(self, app: ASGIApp, metrics: CollectorMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            path = scope["path"]
            endpoint = path if path in ENDPOINTS else "other"
            self.metrics.request(endpoint, status, time.perf_counter() - t0)
