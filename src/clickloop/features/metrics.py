"""Prometheus metrics of the feature engines (one registry per process, labels per set).

Freshness is the time from an event (its ``ts``) to the moment its entity's new
values are in the online store; lag is records appended to the ``events``
topic that the feature stream has not consumed yet.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

STREAM_EVENTS: Final = Counter(
    "clickloop_features_stream_events",
    "Events consumed by the feature stream, by outcome (new, duplicate, invalid)",
    ["outcome"],
)
STREAM_ROWS: Final = Counter(
    "clickloop_features_stream_rows",
    "Rows of a feature set in the stream: applied, too_late (beyond allowed lateness), filtered",
    ["feature_set", "outcome"],
)
ONLINE_ROWS: Final = Counter(
    "clickloop_features_online_rows",
    "Feature rows written to the online store, by source (stream, materialize)",
    ["feature_set", "source"],
)
FRESHNESS: Final = Histogram(
    "clickloop_features_freshness_seconds",
    "Event time to availability in the online store",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
LAG: Final = Gauge(
    "clickloop_features_stream_lag_records",
    "Records on the events topic not yet consumed by the feature stream's group",
    ["group"],
)
PARTIAL_SETS: Final = Gauge(
    "clickloop_features_stream_partial_sets",
    "Feature sets whose values count only this member's partitions (keyed by a non-bus key)",
    ["group"],
)
RATE: Final = Gauge(
    "clickloop_features_stream_events_per_second",
    "Events per second consumed by this process (over the last interval)",
)
CLOCK: Final = Gauge(
    "clickloop_features_stream_clock_seconds",
    "The stream's event-time clock (newest event time seen), as a Unix time",
)
CHECKPOINT: Final = Histogram(
    "clickloop_features_checkpoint_seconds",
    "Time to persist the stream's state and offsets",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BOOTSTRAP_EVENTS: Final = Counter(
    "clickloop_features_bootstrap_events",
    "Lake events the feature stream's state was seeded with (bootstrap)",
)
BATCH_ROWS: Final = Counter(
    "clickloop_features_batch_rows",
    "Rows produced by batch runs (backfill snapshots, training sets)",
    ["feature_set", "job"],
)
