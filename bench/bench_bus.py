"""Event bus throughput: the embedded durable log and Kafka (Tansu), ~200-byte messages.

python bench/run.py --only bus [--quick]
"""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from run import Context

from clickloop.bus.kafka import KafkaBus
from clickloop.bus.local import LocalBus
from clickloop.config.infra import KafkaBusConfig, LocalBusConfig
from clickloop.testing.servers import KafkaServer

TITLE = "Event bus (local durable log, Kafka)"
NOTES = (
    "Messages of 200 bytes keyed by one of 50,000 user ids, published in batches of 1,000 "
    "(one `publish` call each) to the `events` topic (4 partitions); consumed by one group "
    "member with `poll(max_messages=10_000)` (a Message per record) and with `poll_batch` "
    "(columns: values as bytes, partitions/offsets as numpy arrays). *Local log*: "
    "`fsync: batch` (one fdatasync per partition per call), every record with a length, "
    "checksums and offsets. Its baseline, "
    "same run: appending the same bytes to one file with buffered writes and a flush per "
    "batch (no checksums, no index, no fsync) — and, for consuming, reading that file back "
    "into one Python bytes object per record. *Kafka*: Tansu (memory storage) on loopback, "
    "`acks=all` + idempotence; publish returns after every delivery report; consume counts "
    "from the first message received (group join excluded). Its baselines: a bare "
    "confluent-kafka producer loop (produce, flush per 1,000) and consumer loop (`consume`, "
    "no conversion) with the same settings and no clickloop layer. Tansu and the client share "
    "the 2 cores, so Kafka figures are the broker's as much as the client's. "
    "The issue's target: Kafka → lake ≥ 100,000 events/s overall, so the bus must "
    "sustain well above that."
)

SIZE = 200
BATCH = 1000


def _records(n: int) -> list[tuple[bytes, bytes]]:
    pad = b"x" * (SIZE - 24)
    return [(b"u%d" % (i * 7919 % 50_000), b"%023d|" % i + pad) for i in range(n)]


def _rate(n: int, seconds: list[float]) -> tuple[float, list[float]]:
    runs = [n / s for s in seconds]
    return statistics.median(runs), runs


# -- local -------------------------------------------------------------------------------


def _local_publish(path: Path, records: list[tuple[bytes, bytes]]) -> float:
    bus = LocalBus(path, LocalBusConfig(partitions=4))
    producer = bus.producer()
    t0 = time.perf_counter()
    for i in range(0, len(records), BATCH):
        producer.publish("events", records[i : i + BATCH])
    took = time.perf_counter() - t0
    producer.close()
    return took


def _local_consume(path: Path, n: int, *, columns: bool = False) -> float:
    bus = LocalBus(path, LocalBusConfig(partitions=4))
    consumer = bus.consumer(f"bench-{uuid.uuid4().hex[:6]}", ["events"])
    poll = consumer.poll_batch if columns else consumer.poll
    got = 0
    t0 = time.perf_counter()
    while got < n:
        got += len(poll(max_messages=10_000, timeout=1.0))
    took = time.perf_counter() - t0
    consumer.close()
    return took


def _raw_append(path: Path, records: list[tuple[bytes, bytes]]) -> float:
    t0 = time.perf_counter()
    with open(path, "ab") as f:
        for i in range(0, len(records), BATCH):
            f.write(b"".join(v for _, v in records[i : i + BATCH]))
            f.flush()
    return time.perf_counter() - t0


def _raw_read(path: Path, n: int) -> float:
    t0 = time.perf_counter()
    got = 0
    with open(path, "rb") as f:
        while chunk := f.read(SIZE * 10_000):
            got += len([chunk[i : i + SIZE] for i in range(0, len(chunk), SIZE)])
    assert got == n
    return time.perf_counter() - t0


def _local(ctx: Context, n: int, repeat: int) -> list[dict[str, Any]]:
    records = _records(n)
    pub, cons, cols, raw_w, raw_r = [], [], [], [], []
    for r in range(repeat):
        d = ctx.scratch(f"bus-local-{r}")
        pub.append(_local_publish(d / "bus", records))
        cons.append(_local_consume(d / "bus", n))
        cols.append(_local_consume(d / "bus", n, columns=True))
        raw_w.append(_raw_append(d / "raw.bin", records))
        raw_r.append(_raw_read(d / "raw.bin", n))
    pub_m, pub_runs = _rate(n, pub)
    cons_m, cons_runs = _rate(n, cons)
    cols_m, cols_runs = _rate(n, cols)
    raw_w_m, _ = _rate(n, raw_w)
    raw_r_m, _ = _rate(n, raw_r)
    return [
        {
            "name": f"local log: publish {n:,} × 200 B in batches of 1,000 (fsync: batch)",
            "median": pub_m,
            "unit": "events/s",
            "fmt": "{:,.0f}",
            "runs": pub_runs,
            "baseline": raw_w_m,
            "baseline_name": "buffered file append",
            "ratio": pub_m / raw_w_m,
            "target": "≥ 100,000 events/s (not the bottleneck of Kafka/collector → lake)",
            "ok": pub_m >= 100_000,
        },
        {
            "name": f"local log: consume {n:,} × 200 B (one group member)",
            "median": cons_m,
            "unit": "events/s",
            "fmt": "{:,.0f}",
            "runs": cons_runs,
            "baseline": raw_r_m,
            "baseline_name": "file read into one bytes per record",
            "ratio": cons_m / raw_r_m,
            "target": "≥ 100,000 events/s",
            "ok": cons_m >= 100_000,
        },
        {
            "name": f"local log: consume {n:,} × 200 B column-wise (`poll_batch`)",
            "median": cols_m,
            "unit": "events/s",
            "fmt": "{:,.0f}",
            "runs": cols_runs,
            "baseline": raw_r_m,
            "baseline_name": "file read into one bytes per record",
            "ratio": cols_m / raw_r_m,
        },
    ]


# -- Kafka -------------------------------------------------------------------------------


def _kafka_config(bootstrap: str) -> KafkaBusConfig:
    return KafkaBusConfig(
        type="kafka",
        bootstrap=bootstrap,
        topic_prefix=f"b{uuid.uuid4().hex[:8]}.",
        partitions=4,
        session_timeout="6s",
    )


def _kafka_publish(cfg: KafkaBusConfig, records: list[tuple[bytes, bytes]]) -> float:
    bus = KafkaBus(cfg)
    producer = bus.producer()
    producer.publish("events", records[:10])  # create the topic, connect
    t0 = time.perf_counter()
    for i in range(0, len(records), BATCH):
        producer.publish("events", records[i : i + BATCH])
    took = time.perf_counter() - t0
    producer.close()
    return took


def _kafka_consume(cfg: KafkaBusConfig, n: int, *, columns: bool = False) -> float:
    consumer = KafkaBus(cfg).consumer(f"bench-{uuid.uuid4().hex[:6]}", ["events"])
    poll = consumer.poll_batch if columns else consumer.poll
    got = 0
    t0 = 0.0
    deadline = time.monotonic() + 120
    while got < n and time.monotonic() < deadline:
        batch = poll(max_messages=10_000, timeout=1.0)
        if len(batch) and not t0:
            t0 = time.perf_counter()
        got += len(batch)
    took = time.perf_counter() - t0
    consumer.close()
    assert got >= n, f"consumed {got} of {n}"
    return took


def _raw_kafka_produce(bootstrap: str, records: list[tuple[bytes, bytes]]) -> tuple[float, str]:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"raw{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(10)
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
        }
    )
    p.produce(topic, b"warm", b"k")
    p.flush(10)
    t0 = time.perf_counter()
    for i in range(0, len(records), BATCH):
        for k, v in records[i : i + BATCH]:
            while True:
                try:
                    p.produce(topic, v, k)
                    break
                except BufferError:
                    p.poll(0.01)
        p.flush(30)
    return time.perf_counter() - t0, topic


def _raw_kafka_consume(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    c.subscribe([topic])
    got = 0
    t0 = 0.0
    deadline = time.monotonic() + 120
    while got < n and time.monotonic() < deadline:
        batch = c.consume(10_000, 1.0)
        if batch and not t0:
            t0 = time.perf_counter()
        got += sum(1 for m in batch if m.error() is None)
    took = time.perf_counter() - t0
    c.close()
    return took


def _kafka(ctx: Context, n: int, repeat: int) -> list[dict[str, Any]]:
    records = _records(n)
    pub, cons, cols, raw, raw_c = [], [], [], [], []
    with KafkaServer() as server:
        for _ in range(repeat):
            cfg = _kafka_config(server.bootstrap)
            pub.append(_kafka_publish(cfg, records))
            cons.append(_kafka_consume(cfg, n))
            cols.append(_kafka_consume(cfg, n, columns=True))
            took, topic = _raw_kafka_produce(server.bootstrap, records)
            raw.append(took)
            raw_c.append(_raw_kafka_consume(server.bootstrap, topic, n))
    pub_m, pub_runs = _rate(n, pub)
    cons_m, cons_runs = _rate(n, cons)
    cols_m, cols_runs = _rate(n, cols)
    raw_m, _ = _rate(n, raw)
    raw_c_m, _ = _rate(n, raw_c)
    return [
        {
            "name": f"Kafka (Tansu): publish {n:,} × 200 B in batches of 1,000, acks=all",
            "median": pub_m,
            "unit": "events/s",
            "fmt": "{:,.0f}",
            "runs": pub_runs,
            "baseline": raw_m,
            "baseline_name": "bare confluent-kafka produce + flush per 1,000",
            "ratio": pub_m / raw_m,
        },
        {
            "name": f"Kafka (Tansu): consume {n:,} × 200 B (one group member)",
            "median": cons_m,
            "unit": "events/s",
            "fmt": "{:,.0f}",
            "runs": cons_runs,
            "baseline": raw_c_m,
            "baseline_name": "bare confluent-kafka consume loop",
            "ratio": cons_m / raw_c_m,
            "target": "≥ 100,000 events/s (Kafka → lake target)",
            "ok": cons_m >= 100_000,
        },
        {
            "name": f"Kafka (Tansu): consume {n:,} × 200 B column-wise (`poll_batch`)",
            "median": cols_m,
            "unit": "events/s",
            "fmt": "{:,.0f}",
            "runs": cols_runs,
            "baseline": raw_c_m,
            "baseline_name": "bare confluent-kafka consume loop",
            "ratio": cols_m / raw_c_m,
            "target": "≥ 100,000 events/s (what the stream ingester uses)",
            "ok": cols_m >= 100_000,
        },
    ]


def run(ctx: Context) -> list[dict[str, Any]]:
    n = 100_000 if ctx.quick else 500_000
    repeat = 3
    return _local(ctx, n, repeat) + _kafka(ctx, n, repeat)
