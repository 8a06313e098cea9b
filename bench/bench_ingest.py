"""Ingestion throughput: batch import of simulator JSONL, and Kafka (Tansu) → lake.

Batch import does everything a user gets — parse (with per-line fallback), map,
validate, quarantine, dedupe against the lake, partition by event date, write
Parquet with dedupe sidecars, commit with checkpoints — and is compared with a
bare ``pyarrow.json.read_json`` + ``pyarrow.parquet.write_table`` of the same
files, measured in the same run.
"""

from __future__ import annotations

import shutil
import statistics
import threading
import time
import uuid
from pathlib import Path

import pyarrow.json as pajson
import pyarrow.parquet as pq
from run import Context, timed

from clickloop.ingest.batch import BatchImport
from clickloop.ingest.files import discover
from clickloop.lake import Lake
from clickloop.simulate import simulate

TITLE = "Ingestion (`clickloop ingest batch`, `clickloop ingest stream`)"
NOTES = (
    "Batch: simulator JSONL (0.5% malformed records, 0.1% duplicates) into an empty local "
    "lake, all the way to committed Parquet; baseline: bare pyarrow `read_json` + "
    "`write_table` of the same files in the same run (no validation, no dedupe, no "
    "partitioning, no commit). Stream: events already on a Kafka topic (Tansu broker, 4 "
    "partitions) into the lake, steady-state rate from the first to the last committed "
    "micro-batch; baseline: a bare confluent-kafka consumer reading the same topic. "
    "The machine is shared and noisy: the ratios are the figures that matter."
)


def _bare(files: list[Path], out: Path) -> int:
    n = 0
    for i, f in enumerate(files):
        table = pajson.read_json(f)
        pq.write_table(table, out / f"{i}.parquet")
        n += table.num_rows
    return n


def _batch(files: list[Path], root: Path) -> int:
    shutil.rmtree(root, ignore_errors=True)
    lake = Lake.open(str(root))
    report = BatchImport(lake).run(discover([str(f) for f in files]))
    lake.close()
    return report.counts.received


def _batch_results(ctx: Context) -> list[dict]:
    n = 300_000 if ctx.quick else 2_000_000
    sim = ctx.scratch("ingest-sim")
    simulate(sim, events=n, days=7, seed=7, force=True)
    files = sorted((sim / "events").glob("*.jsonl"))
    bare_dir = ctx.scratch("ingest-bare")
    lake_dir = ctx.work / "ingest-lake"
    repeat = 3
    ours_runs, bare_runs = [], []
    for _ in range(repeat):  # interleaved, so both see the same machine load
        t, _ = timed(lambda: _batch(files, lake_dir), repeat=1)
        ours_runs.append(n / t)
        t, _ = timed(lambda: _bare(files, bare_dir), repeat=1)
        bare_runs.append(n / t)
    ours, bare = statistics.median(ours_runs), statistics.median(bare_runs)
    return [
        {
            "name": f"batch import {n:,} simulator events (JSONL → lake)",
            "median": ours,
            "unit": "events/s",
            "fmt": "{:,.0f}",
            "runs": ours_runs,
            "baseline": bare,
            "baseline_name": "bare read_json + write_table",
            "ratio": ours / bare,
            "target": "≥ 300,000 events/s",
            "ok": ours >= 300_000 if not ctx.quick else None,
        }
    ]


def _kafka_results(ctx: Context) -> list[dict]:
    from clickloop.bus.base import open_bus
    from clickloop.ingest.stream import StreamReport, run_stream
    from clickloop.project import Project
    from clickloop.testing.servers import KafkaServer

    n = 100_000 if ctx.quick else 500_000
    sim = ctx.scratch("kafka-sim")
    simulate(sim, events=n, days=3, seed=11, force=True, malformed=0.0)
    lines = [
        line
        for f in sorted((sim / "events").glob("*.jsonl"))
        for line in f.read_bytes().split(b"\n")
        if line
    ]
    with KafkaServer() as broker:
        root = ctx.scratch("kafka-project")
        (root / "clickloop.yaml").write_text(
            "project: bench\n"
            f"bus: {{type: kafka, bootstrap: '{broker.bootstrap}', partitions: 4, "
            "session_timeout: 6s}\n"
            "ingest: {batch_max_events: 50000, batch_max_wait: 1s}\n"
        )
        project = Project.load(root)
        bus = open_bus(project)
        producer = bus.producer()
        for i in range(0, len(lines), 20_000):
            chunk = lines[i : i + 20_000]
            producer.publish("events", [(str(j % 997).encode(), v) for j, v in enumerate(chunk)])
        producer.close()

        ours_runs, bare_runs = [], []
        for _ in range(1 if ctx.quick else 3):
            marks: list[tuple[float, int]] = []
            stop = threading.Event()

            def on_batch(
                r: StreamReport, marks: list = marks, stop: threading.Event = stop
            ) -> None:
                marks.append((time.perf_counter(), r.counts.received))
                if r.counts.received >= len(lines):
                    stop.set()

            shutil.rmtree(project.state_path("lake"), ignore_errors=True)
            run_stream(project, group=f"b{uuid.uuid4().hex[:8]}", stop=stop, on_batch=on_batch)
            (t0, first), (t1, last) = marks[0], marks[-1]
            ours_runs.append((last - first) / (t1 - t0))
            bare_runs.append(_bare_kafka(bus, len(lines)))
        bus.close()
    ours, bare = statistics.median(ours_runs), statistics.median(bare_runs)
    return [
        {
            "name": f"Kafka (Tansu) → lake, {len(lines):,} events",
            "median": ours,
            "unit": "events/s",
            "fmt": "{:,.0f}",
            "runs": ours_runs,
            "baseline": bare,
            "baseline_name": "bare confluent-kafka consumer",
            "ratio": ours / bare,
            "target": "≥ 100,000 events/s",
            "ok": ours >= 100_000 if not ctx.quick else None,
        }
    ]


def _bare_kafka(bus: object, n: int) -> float:
    """Messages/s of a plain consumer reading the topic (from its first message on)."""
    from confluent_kafka import Consumer

    from clickloop.bus.kafka import KafkaBus, client_config

    assert isinstance(bus, KafkaBus)
    c = Consumer(
        {
            **client_config(bus.config),
            "group.id": f"bare{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    c.subscribe([bus.topic_name("events")])
    seen, t0 = 0, None
    deadline = time.monotonic() + 300
    while seen < n and time.monotonic() < deadline:
        got = c.consume(50_000, 1.0)
        if got and t0 is None:
            t0 = time.perf_counter()
        seen += sum(1 for m in got if m.error() is None)
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    return seen / elapsed if elapsed else 0.0


def run(ctx: Context) -> list[dict]:
    return _batch_results(ctx) + _kafka_results(ctx)
