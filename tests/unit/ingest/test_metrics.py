"""Ingestion metrics: what a Prometheus scrape shows after commits."""

from __future__ import annotations

import asyncio

from clickloop.ingest.metrics import IngestMetrics
from clickloop.lake.log import FileEntry, SourceCounts
from clickloop.lake.writer import CommitResult


def _commit(received: int, accepted: int, dups: int, quarantined: dict[str, int]) -> CommitResult:
    counts = SourceCounts(received, accepted, dups, quarantined)
    entry = FileEntry("raw/events/dt=2026-11-01/p.parquet", "events", "2026-11-01", accepted,
                      1234, 0, 0, 0)  # fmt: skip
    return CommitResult(7, {"web": counts}, [entry], 1234, 0.02)


def test_counters_move_with_commits_and_reconcile():
    m = IngestMetrics()
    m.observe_commit(_commit(10, 7, 1, {"bad_ts": 2}), "ingest-stream")
    m.observe_commit(CommitResult(None), "ingest-stream")  # nothing committed: no change
    m.set_lag("lake", "events", {0: 5, 1: 0})
    text = m.render().decode()
    assert 'clickloop_ingest_records_received_total{source="web"} 10.0' in text
    assert 'clickloop_ingest_events_accepted_total{source="web"} 7.0' in text
    assert 'clickloop_ingest_events_duplicate_total{source="web"} 1.0' in text
    assert 'clickloop_ingest_records_quarantined_total{reason="bad_ts",source="web"} 2.0' in text
    assert 'clickloop_ingest_bus_lag{group="lake",partition="0",topic="events"} 5.0' in text
    assert 'clickloop_lake_commits_total{operation="ingest-stream"} 1.0' in text
    assert 'clickloop_lake_bytes_written_total{kind="events"} 1234.0' in text


def test_the_metrics_app_can_be_mounted_in_any_asgi_service():
    m = IngestMetrics()
    m.observe_commit(_commit(1, 1, 0, {}), "ingest-batch")
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": [],
             "query_string": b"", "root_path": ""}  # fmt: skip
    asyncio.run(m.asgi_app()(scope, receive, send))
    assert sent[0]["status"] == 200
    assert b"clickloop_ingest_events_accepted_total" in sent[1]["body"]
