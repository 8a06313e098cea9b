"""The stream ingester on a real Kafka-compatible broker (Tansu).

Tansu runs on memory storage: a broker restart loses topics, data and the group's
offsets. The restart test therefore asserts recovery as a user sees it: the running
ingester reconnects by itself, traffic published after the restart reaches the lake,
and nothing the lake had committed before is lost or duplicated.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from clickloop.bus.base import open_bus
from clickloop.ingest.stream import StreamReport, run_stream
from clickloop.lake import open_lake
from clickloop.project import Project
from clickloop.testing.servers import KafkaServer
from tests.integration.ingest_helpers import clickloop, publish_lines, sim_lines, truth, wait_for

pytestmark = pytest.mark.integration


def _project(root: Path, bootstrap: str, partitions: int = 4) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    (root / "clickloop.yaml").write_text(
        "project: kafka\n"
        f"bus: {{type: kafka, bootstrap: '{bootstrap}', topic_prefix: 't{uuid.uuid4().hex[:8]}.',"
        f" partitions: {partitions}, session_timeout: 6s}}\n"
        "ingest: {batch_max_events: 2000, batch_max_wait: 300ms}\n"
    )
    return Project.load(root)


def _event(i: int, tag: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{tag}-{i}",
            "ts": f"2026-11-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "type": "page_view",
            "user_id": f"u{i % 50}",
            "url": "https://shop.example.com/items/1/2",
        }
    )


def _ids(project: Project) -> list[str]:
    lake = open_lake(project)
    return lake.events(columns=["event_id"]).to_table().column("event_id").to_pylist()


def test_two_ingesters_share_kafka_partitions_and_reconcile(tmp_path, kafka_server, sim_small):
    project = _project(tmp_path / "p", kafka_server.bootstrap)
    bus = open_bus(project)
    publish_lines(bus, sim_lines(sim_small))
    bus.close()
    reports: list[StreamReport] = []

    group = f"g{uuid.uuid4().hex[:8]}"  # the broker is shared: a group of its own

    def member() -> None:
        reports.append(run_stream(project, group=group, idle_exit=15.0))

    threads = [threading.Thread(target=member) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    summary = truth(sim_small)
    expected = summary["expected"]
    lake = open_lake(project)
    counts = lake.stats()["sources"]["bus:events"]
    assert counts["received"] == summary["records"]
    assert counts["accepted"] == expected["valid"] == lake.events().count_rows()
    assert counts["duplicates"] == expected["duplicates"]
    assert counts["quarantined"] == expected["quarantined"]
    assert max(Counter(_ids(project)).values()) == 1
    assert sum(r.counts.received for r in reports) == summary["records"]


def test_kafka_ingester_killed_between_lake_and_bus_commit_resumes_exactly_once(
    tmp_path, kafka_server
):
    project = _project(tmp_path / "p", kafka_server.bootstrap, partitions=2)
    bus = open_bus(project)
    bus.producer().publish("events", [(b"u%d" % (i % 50), _event(i, "k")) for i in range(6000)])
    bus.close()
    group = f"g{uuid.uuid4().hex[:8]}"  # the broker is shared: a group of its own
    args = ("ingest", "stream", "--group", group, "--idle-exit", "20", "--max-events", "1000")
    proc = clickloop(project.root, *args, crash="stream-lake-committed:2")
    proc.wait(180)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert 0 < len(_ids(project)) < 6000
    done = clickloop(project.root, *args, json=True)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err.decode()[-2000:]
    report = orjson.loads(out)
    assert report["redelivered_skipped"] > 0  # the committed-but-unacknowledged batch
    ids = _ids(project)
    assert sorted(ids) == sorted(f"k-{i}" for i in range(6000))
    assert open_lake(project).stats()["total"]["received"] == 6000


@pytest.fixture
def broker() -> Iterator[KafkaServer]:
    with KafkaServer() as server:  # a private broker: this test restarts it
        yield server


def test_the_ingester_recovers_by_itself_after_a_broker_restart(tmp_path, broker):
    project = _project(tmp_path / "p", broker.bootstrap, partitions=2)
    stop = threading.Event()
    result: list[StreamReport] = []
    runner = threading.Thread(target=lambda: result.append(run_stream(project, stop=stop)))
    runner.start()
    try:
        bus = open_bus(project)
        producer = bus.producer()
        producer.publish("events", [(b"u%d" % (i % 50), _event(i, "a")) for i in range(1500)])
        wait_for(lambda: len(_ids(project)) == 1500, 120, "the events before the restart")

        broker.restart()
        time.sleep(1.0)
        after = [(b"u%d" % (i % 50), _event(i, "b")) for i in range(1000)]
        producer.publish("events", after)  # the producer recovers by itself too
        wait_for(lambda: len(_ids(project)) == 2500, 180, "the events after the restart")
        producer.close()
        bus.close()
    finally:
        stop.set()
        runner.join(120)
    assert not runner.is_alive()
    ids = _ids(project)
    assert sorted(ids) == sorted([f"a-{i}" for i in range(1500)] + [f"b-{i}" for i in range(1000)])
    stats = open_lake(project).stats()
    assert stats["total"]["balanced"] and stats["total"]["duplicates"] == 0
