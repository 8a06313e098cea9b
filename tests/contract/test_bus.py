"""One contract for every bus backend: the embedded local log and Kafka (a real broker).

Each test gets a fresh bus: a temporary directory for the local log, a unique
topic prefix on the session's Kafka-compatible broker (Tansu) for Kafka.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from clickloop.bus import Bus, Consumer, Message, MessageBatch, PartitionsRevokedError
from clickloop.config.infra import KafkaBusConfig, LocalBusConfig

PARTITIONS = 4


class Harness:
    """Opens buses on one backend's storage; closes what it opened."""

    kind = ""

    def __init__(self) -> None:
        self._open: list[Bus] = []
        self._consumers: list[Consumer] = []

    def open(self) -> Bus:
        bus = self._make()
        self._open.append(bus)
        return bus

    def consumer(self, bus: Bus, group: str, topics: list[str]) -> Consumer:
        c = bus.consumer(group, topics)
        self._consumers.append(c)
        return c

    def _make(self) -> Bus:
        raise NotImplementedError

    def close(self) -> None:
        for c in self._consumers:
            c.close()  # closing twice is fine
        for b in self._open:
            b.close()


class LocalHarness(Harness):
    kind = "local"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _make(self) -> Bus:
        from clickloop.bus.local import LocalBus

        return LocalBus(self.path, LocalBusConfig(partitions=PARTITIONS, session_timeout="3s"))


class KafkaHarness(Harness):
    kind = "kafka"

    def __init__(self, bootstrap: str) -> None:
        super().__init__()
        self.config = KafkaBusConfig(
            type="kafka",
            bootstrap=bootstrap,
            topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
            partitions=PARTITIONS,
            session_timeout="6s",
        )

    def _make(self) -> Bus:
        from clickloop.bus.kafka import KafkaBus

        return KafkaBus(self.config)


@pytest.fixture(params=["local", pytest.param("kafka", marks=pytest.mark.integration)])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "local":
        h: Harness = LocalHarness(tmp_path / "bus")
    else:
        h = KafkaHarness(request.getfixturevalue("kafka_server").bootstrap)
    try:
        yield h
    finally:
        h.close()


def drain(consumers: list[Consumer], want: int, *, timeout: float = 60.0, commit: bool = False):
    """Poll ``consumers`` in turn until ``want`` messages arrived in total (or time runs out)."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for c in consumers:
            batch = c.poll(max_messages=1000, timeout=0.2)
            got += batch
            if commit and batch:
                c.commit(next_offsets(batch))
    return got


def next_offsets(batch: list[Message]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for m in batch:
        out[(m.topic, m.partition)] = max(out.get((m.topic, m.partition), 0), m.offset + 1)
    return out


def settle(consumers: list[Consumer], *, timeout: float = 60.0) -> list[list[Message]]:
    """Poll until every consumer owns some partitions and together they own all, once.

    Returns what each consumer received meanwhile.
    """
    got: list[list[Message]] = [[] for _ in consumers]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i, c in enumerate(consumers):
            got[i] += c.poll(max_messages=1000, timeout=0.1)
        owned = [tp for c in consumers for tp in c.assignment()]
        if all(c.assignment() for c in consumers) and sorted(owned) == [
            ("events", p) for p in range(PARTITIONS)
        ]:
            return got
    raise AssertionError(f"no stable assignment: {[c.assignment() for c in consumers]}")


# -- the contract ------------------------------------------------------------------------


def test_per_key_order_and_dense_offsets_from_zero(harness):
    bus = harness.open()
    producer = bus.producer()
    keys = [f"user-{i}".encode() for i in range(25)]
    for rnd in range(8):
        producer.publish("events", [(k, b"%s:%d" % (k, rnd)) for k in keys])
    for i in range(0, 40, 2):  # keyless records spread over partitions over time
        producer.publish("events", [(None, b"no-key-%d" % i), (None, b"no-key-%d" % (i + 1))])
        time.sleep(0.02)
    producer.close()
    got = drain([harness.consumer(bus, "g", ["events"])], 240)
    assert len(got) == 240
    by_partition = defaultdict(list)
    for m in got:
        assert m.topic == "events"
        by_partition[m.partition].append(m.offset)
    for p, offsets in by_partition.items():
        assert offsets == list(range(len(offsets))), p
    for k in keys:
        mine = [m for m in got if m.key == k]
        assert len({m.partition for m in mine}) == 1, "one key, one partition"
        assert [m.value for m in mine] == [b"%s:%d" % (k, r) for r in range(8)]
    keyless = [m for m in got if m.key is None]
    assert len(keyless) == 40 and len({m.partition for m in keyless}) > 1, "keyless spread"
    assert all(m.timestamp_ms > 1_600_000_000_000 for m in got)


def test_a_new_consumer_resumes_at_the_committed_offsets(harness):
    bus = harness.open()
    producer = bus.producer()
    producer.publish("events", [(b"k%d" % (i % 7), b"%d" % i) for i in range(300)])
    first = harness.consumer(bus, "lake", ["events"])
    seen = drain([first], 300)
    assert len(seen) == 300
    half = [m for m in seen if m.offset < 20]
    first.commit(next_offsets(half))
    assert first.committed() == {tp: o for tp, o in next_offsets(half).items()} | {
        tp: 0 for tp in first.assignment() if tp not in next_offsets(half)
    }
    first.close()
    second = harness.consumer(harness.open(), "lake", ["events"])
    rest = drain([second], 300 - len(half), timeout=30)
    assert sorted(m.value for m in rest) == sorted(m.value for m in seen if m.offset >= 20)
    assert second.poll(max_messages=10, timeout=0.5) == []
    other_group = harness.consumer(bus, "audit", ["events"])
    assert len(drain([other_group], 300)) == 300, "groups are independent"


def test_two_members_split_the_partitions_and_see_every_message_once(harness):
    bus = harness.open()
    a = harness.consumer(bus, "pair", ["events"])
    b = harness.consumer(harness.open(), "pair", ["events"])
    assert settle([a, b]) == [[], []]
    assert not set(a.assignment()) & set(b.assignment())
    producer = bus.producer()
    producer.publish("events", [(b"user-%d" % i, b"%d" % i) for i in range(2000)])
    got_a, got_b = [], []
    deadline = time.monotonic() + 60
    while len(got_a) + len(got_b) < 2000 and time.monotonic() < deadline:
        got_a += a.poll(max_messages=500, timeout=0.1)
        got_b += b.poll(max_messages=500, timeout=0.1)
    assert got_a and got_b
    assert {m.partition for m in got_a}.isdisjoint({m.partition for m in got_b})
    values = Counter(m.value for m in got_a + got_b)
    assert len(values) == 2000 and set(values.values()) == {1}


def test_when_a_member_leaves_the_other_takes_over_from_its_commits(harness):
    bus = harness.open()
    a = harness.consumer(bus, "team", ["events"])
    b = harness.consumer(harness.open(), "team", ["events"])
    assert settle([a, b]) == [[], []]
    producer = bus.producer()
    producer.publish("events", [(b"u%d" % i, b"first-%d" % i) for i in range(400)])
    first = drain([a, b], 400, commit=True)
    assert len(first) == 400
    b_parts = b.assignment()
    b.close()
    producer.publish("events", [(b"u%d" % i, b"second-%d" % i) for i in range(400)])
    second = drain([a], 400, commit=True)
    assert sorted(a.assignment()) == [("events", p) for p in range(PARTITIONS)]
    assert sorted(m.value for m in second) == sorted(b"second-%d" % i for i in range(400))
    assert {m.partition for m in second} >= {p for _, p in b_parts}
    assert a.poll(max_messages=10, timeout=0.3) == []


def test_commit_for_a_partition_handed_to_another_member_is_refused(harness):
    bus = harness.open()
    bus.producer().publish("events", [(b"u%d" % i, b"v") for i in range(100)])
    a = harness.consumer(bus, "fence", ["events"])
    mine = drain([a], 100)
    assert len(mine) == 100
    ends = next_offsets(mine)
    b = harness.consumer(harness.open(), "fence", ["events"])
    early = settle([a, b])[1]
    lost = [tp for tp in ends if tp not in a.assignment()]
    assert lost
    with pytest.raises(PartitionsRevokedError) as info:
        a.commit(ends)
    assert set(info.value.partitions) == set(lost)
    assert bus.committed_offsets("fence", "events") == dict.fromkeys(range(PARTITIONS), 0)
    kept = {tp: o for tp, o in ends.items() if tp in a.assignment()}
    a.commit(kept)
    assert {
        ("events", p): o for p, o in bus.committed_offsets("fence", "events").items() if o
    } == kept
    # the new owner starts where the group committed: at 0 for the lost partitions
    again = early + drain([b], sum(ends[tp] for tp in lost) - len(early))
    assert next_offsets(again) == {tp: ends[tp] for tp in lost}


def test_poll_timeout_is_honoured(harness):
    bus = harness.open()
    c = harness.consumer(bus, "idle", ["events"])
    c.poll(max_messages=10, timeout=0.5)  # first poll may join the group
    for wait in (0.0, 0.3, 1.0):
        t0 = time.monotonic()
        assert c.poll(max_messages=10, timeout=wait) == []
        took = time.monotonic() - t0
        assert wait * 0.9 <= took <= wait + 1.5, (wait, took)
    bus.producer().publish("events", [(b"k", b"v")])
    t0 = time.monotonic()
    assert len(drain([c], 1)) == 1
    assert time.monotonic() - t0 < 10, "a waiting poll returns when data arrives"


def test_large_and_many_small_messages(harness):
    bus = harness.open()
    producer = bus.producer()
    big = bytes(range(256)) * 2048  # 512 KiB
    producer.publish("events", [(b"big", big), (b"big", big[::-1])])
    small = [(None if i % 5 == 0 else b"%d" % (i % 13), b"%d" % i) for i in range(20_000)]
    producer.publish("events", small)
    producer.publish("events", [(b"empty", b"")])
    got = drain([harness.consumer(bus, "sizes", ["events"])], 20_003)
    assert len(got) == 20_003
    bigs = [m.value for m in got if m.key == b"big"]
    assert bigs == [big, big[::-1]]
    assert sorted(int(m.value) for m in got if m.key not in (b"big", b"empty")) == list(
        range(20_000)
    )
    assert [m.value for m in got if m.key == b"empty"] == [b""]


def test_end_offsets_committed_offsets_and_lag(harness):
    bus = harness.open()
    assert bus.end_offsets("events") == dict.fromkeys(range(PARTITIONS), 0)
    producer = bus.producer()
    # one record per publish: Tansu 0.6 (the test broker) reports a partition's high
    # watermark as its last *batch's* first offset + 1; Kafka reports the true end whatever
    # the batching, and so does the local log
    for i in range(60):
        producer.publish("events", [(b"user-%d" % i, b"x")])
    ends = bus.end_offsets("events")
    assert sum(ends.values()) == 60 and len(ends) == PARTITIONS
    assert bus.lag("lagging", "events") == ends
    c = harness.consumer(bus, "lagging", ["events"])
    got = drain([c], 60)
    assert {tp: o for tp, o in next_offsets(got).items()} == {
        ("events", p): n for p, n in ends.items() if n
    }
    part = {tp: o for tp, o in next_offsets(got).items() if tp[1] == 0}
    c.commit(part)
    lag = bus.lag("lagging", "events")
    assert lag[0] == 0 and sum(lag.values()) == 60 - ends[0]
    c.commit(next_offsets(got))
    assert bus.lag("lagging", "events") == dict.fromkeys(range(PARTITIONS), 0)
    assert bus.committed_offsets("lagging", "events") == ends
    assert harness.open().committed_offsets("lagging", "events") == ends


# -- column-wise polls -------------------------------------------------------------------


def drain_batches(consumer: Consumer, want: int, *, timeout: float = 60.0) -> list[MessageBatch]:
    got: list[MessageBatch] = []
    deadline = time.monotonic() + timeout
    while sum(map(len, got)) < want and time.monotonic() < deadline:
        batch = consumer.poll_batch(max_messages=700, timeout=0.2)
        assert isinstance(batch, MessageBatch)
        if len(batch):
            got.append(batch)
    return got


def test_poll_batch_delivers_what_poll_does_column_wise(harness):
    bus = harness.open()
    producer = bus.producer()
    records = [(None if i % 9 == 0 else b"user-%d" % (i % 31), b"v%d" % i) for i in range(3000)]
    producer.publish("events", records[:1500])
    producer.publish("exposures", [(b"x", b"exp-%d" % i) for i in range(40)])
    producer.publish("events", records[1500:])
    consumer = harness.consumer(bus, "cols", ["events", "exposures"])
    batches = drain_batches(consumer, 3040)
    assert all(len(b) <= 700 for b in batches), "max_messages is honoured"
    got = [m for b in batches for m in b]  # iterating a batch yields Message objects
    assert len(got) == 3040
    by_tp = defaultdict(list)
    for m in got:
        by_tp[(m.topic, m.partition)].append(m.offset)
    for offsets in by_tp.values():
        assert offsets == list(range(len(offsets))), "dense, in offset order per partition"
    assert Counter((m.key, m.value) for m in got if m.topic == "events") == Counter(records)
    assert [m.value for m in got if m.topic == "exposures"] == [b"exp-%d" % i for i in range(40)]
    assert all(m.timestamp_ms > 1_600_000_000_000 for m in got)
    for b in batches:  # the columns agree with the messages
        assert b.values == [m.value for m in b]
        assert b.offsets.tolist() == [m.offset for m in b]
        assert b.partitions.tolist() == [m.partition for m in b]
        assert [b.origin(i) for i in range(len(b))] == [
            f"{m.topic}/{m.partition}@{m.offset}" for m in b
        ]
    # commit what the batches say; a new member of the group finds nothing left
    for b in batches:
        consumer.commit(b.next_offsets())
    ends = {tp: n for tp, n in next_offsets(got).items() if tp[0] == "events"}
    assert sum(ends.values()) == 3000
    assert MessageBatch.concat(batches).next_offsets() == next_offsets(got)
    assert {tp: o for tp, o in consumer.committed().items() if tp[0] == "events" and o} == ends
    consumer.close()
    again = harness.consumer(harness.open(), "cols", ["events", "exposures"])
    assert len(again.poll_batch(max_messages=10, timeout=2.0)) == 0


def test_poll_and_poll_batch_mixed_deliver_each_message_once(harness):
    bus = harness.open()
    bus.producer().publish("events", [(b"u%d" % (i % 11), b"%d" % i) for i in range(2000)])
    c = harness.consumer(bus, "mixed", ["events"])
    values: list[bytes] = []
    deadline = time.monotonic() + 60
    turn = 0
    while len(values) < 2000 and time.monotonic() < deadline:
        if turn % 2:
            values += c.poll_batch(max_messages=137, timeout=0.2).values
        else:
            values += [m.value for m in c.poll(max_messages=137, timeout=0.2)]
        turn += 1
    assert Counter(values) == Counter(b"%d" % i for i in range(2000))
    t0 = time.monotonic()
    empty = c.poll_batch(max_messages=10, timeout=0.5)
    assert len(empty) == 0 and empty.next_offsets() == {}
    assert 0.45 <= time.monotonic() - t0 <= 2.0, "an empty poll_batch waits out its timeout"


def test_batch_commit_for_a_revoked_partition_is_refused(harness):
    bus = harness.open()
    bus.producer().publish("events", [(b"u%d" % i, b"v") for i in range(100)])
    a = harness.consumer(bus, "fence-cols", ["events"])
    batch = MessageBatch.concat(drain_batches(a, 100))
    assert len(batch) == 100
    b = harness.consumer(harness.open(), "fence-cols", ["events"])
    settle([a, b])
    lost = {tp for tp in batch.next_offsets() if tp not in a.assignment()}
    with pytest.raises(PartitionsRevokedError) as info:
        a.commit(batch.next_offsets())
    assert set(info.value.partitions) == lost
    assert bus.committed_offsets("fence-cols", "events") == dict.fromkeys(range(PARTITIONS), 0)
