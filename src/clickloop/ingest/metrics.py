"""Prometheus metrics of batch import and the stream ingester.

==================================================  =========  =============================
metric                                              type       labels
==================================================  =========  =============================
``clickloop_ingest_records_received_total``         counter    ``source``
``clickloop_ingest_events_accepted_total``          counter    ``source``
``clickloop_ingest_records_quarantined_total``      counter    ``source``, ``reason``
``clickloop_ingest_events_duplicate_total``         counter    ``source``
``clickloop_ingest_bus_lag``                        gauge      ``group``, ``topic``, ``partition``
``clickloop_ingest_batch_records``                  histogram  records per micro-batch
``clickloop_ingest_commit_conflicts_total``         counter    commits refused (partition moved)
``clickloop_lake_commit_seconds``                   histogram  ``operation``
``clickloop_lake_commits_total``                    counter    ``operation``
``clickloop_lake_bytes_written_total``              counter    ``kind`` (events, quarantine)
==================================================  =========  =============================

Counters move only when a lake commit succeeds, so received = accepted +
duplicate + quarantined holds on every scrape. Each :class:`IngestMetrics` has
its own registry (several ingesters can live in one process); serve it with
:meth:`IngestMetrics.asgi_app` (mount it in any ASGI service) or
:meth:`IngestMetrics.serve` (a standalone port).

>>> m = IngestMetrics()
>>> b"clickloop_lake_commits_total" in m.render()
True
"""

from __future__ import annotations

from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_asgi_app,
    start_http_server,
)

from clickloop.lake.writer import CommitResult

_SECONDS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_RECORDS: Final = (1, 10, 100, 1000, 5000, 10_000, 50_000, 100_000, 500_000, 1_000_000)


class IngestMetrics:
    """Ingestion and lake-commit metrics in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "clickloop_ingest_records_received", "Records that came in", ["source"], registry=r
        )
        self.accepted = Counter(
            "clickloop_ingest_events_accepted", "Events committed to the lake", ["source"],
            registry=r,
        )  # fmt: skip
        self.quarantined = Counter(
            "clickloop_ingest_records_quarantined", "Records quarantined, by reason code",
            ["source", "reason"], registry=r,
        )  # fmt: skip
        self.duplicates = Counter(
            "clickloop_ingest_events_duplicate", "Events dropped as duplicates of an accepted "
            "event_id within the dedupe horizon", ["source"], registry=r,
        )  # fmt: skip
        self.lag = Gauge(
            "clickloop_ingest_bus_lag", "Records on the bus not yet committed by the group",
            ["group", "topic", "partition"], registry=r,
        )  # fmt: skip
        self.batch = Histogram(
            "clickloop_ingest_batch_records", "Records per micro-batch", buckets=_RECORDS,
            registry=r,
        )  # fmt: skip
        self.conflicts = Counter(
            "clickloop_ingest_commit_conflicts", "Lake commits refused because a partition "
            "moved to another ingester", registry=r,
        )  # fmt: skip
        self.commit_seconds = Histogram(
            "clickloop_lake_commit_seconds", "Time to make a lake commit durable",
            ["operation"], buckets=_SECONDS, registry=r,
        )  # fmt: skip
        self.commits = Counter("clickloop_lake_commits", "Lake commits", ["operation"], registry=r)
        self.bytes_written = Counter(
            "clickloop_lake_bytes_written", "Parquet bytes committed to the lake", ["kind"],
            registry=r,
        )  # fmt: skip

    def observe_commit(self, result: CommitResult, operation: str) -> None:
        """Count a successful lake commit (no-op for an empty one)."""
        if result.version is None:
            return
        self.commits.labels(operation).inc()
        self.commit_seconds.labels(operation).observe(result.seconds)
        for e in result.files:
            self.bytes_written.labels(e.kind).inc(e.bytes)
        for source, c in result.counts.items():
            self.received.labels(source).inc(c.received)
            self.accepted.labels(source).inc(c.accepted)
            self.duplicates.labels(source).inc(c.duplicates)
            for reason, n in c.quarantined.items():
                self.quarantined.labels(source, reason).inc(n)

    def set_lag(self, group: str, topic: str, lag: dict[int, int]) -> None:
        for partition, n in lag.items():
            self.lag.labels(group, topic, str(partition)).set(n)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)

    def asgi_app(self) -> Any:
        """An ASGI app answering ``GET /metrics`` (mount it in any service)."""
        return make_asgi_app(self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> Any:
        """Serve ``/metrics`` on ``host:port`` from a background thread; return the server."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server
