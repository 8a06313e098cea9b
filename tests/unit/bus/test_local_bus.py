"""What only the embedded bus promises: durability across reopen and kill -9, segment
rolling and retention, several producer and consumer processes on one directory."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from clickloop.bus import open_bus
from clickloop.bus.local import LocalBus, partition_for
from clickloop.bus.segment import list_segments
from clickloop.config.infra import LocalBusConfig
from clickloop.errors import BackendUnavailableError, UsageError
from clickloop.project import Project
from tests.unit.bus.workers import check, payload

ROOT = Path(__file__).resolve().parents[3]


def worker(*args: str) -> subprocess.Popen[bytes]:
    """A worker process; its stderr goes to ``<its output file>.err`` for failure messages."""
    with open(args[-1] + ".err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.unit.bus.workers", *args], cwd=ROOT, stderr=err
        )


def stderr_of(proc: subprocess.Popen[bytes]) -> str:
    return Path(str(proc.args[-1]) + ".err").read_text(errors="replace")[-3000:]


def read_everything(bus: LocalBus, group: str = "check") -> list:
    c = bus.consumer(group, ["events"])
    out = []
    while batch := c.poll(max_messages=5000, timeout=0.3):
        out += batch
    c.close()
    return out


def assert_dense(messages: list) -> None:
    by_partition = defaultdict(list)
    for m in messages:
        by_partition[m.partition].append(m.offset)
    for p, offsets in by_partition.items():
        assert offsets == list(range(len(offsets))), f"partition {p} has gaps or repeats"


def test_records_survive_closing_and_reopening(tmp_path):
    bus = LocalBus(tmp_path, LocalBusConfig(partitions=3))
    p = bus.producer()
    p.publish("events", [(b"u%d" % i, b"%d" % i) for i in range(1000)])
    p.publish("exposures", [(None, b"x")])
    p.close()
    c = bus.consumer("g", ["events"])
    first = c.poll(max_messages=100, timeout=1)
    c.commit({(m.topic, m.partition): m.offset + 1 for m in first})
    c.close()
    bus.close()
    again = LocalBus(tmp_path, LocalBusConfig(partitions=8))  # a topic keeps its partition count
    assert again.partitions("events") == 3
    assert sum(again.end_offsets("events").values()) == 1000
    assert again.topics() == ["events", "exposures"]
    rest = read_everything(again, "g")
    assert len(rest) == 1000 - len(first)
    assert sorted(int(m.value) for m in first + rest) == list(range(1000))


def test_open_bus_uses_the_project_home(tmp_path):
    (tmp_path / "clickloop.yaml").write_text("bus: {type: local, partitions: 2}\n")
    bus = open_bus(Project.load(tmp_path))
    assert isinstance(bus, LocalBus)
    assert bus.path == tmp_path / ".clickloop" / "bus"
    bus.producer().publish("events", [(b"k", b"v")])
    assert (tmp_path / ".clickloop" / "bus" / "events" / "topic.json").exists()
    assert bus.partitions("events") == 2


@pytest.mark.parametrize("name", ["", "a/b", "..", "groups", "-x", "ü"])
def test_bad_topic_and_group_names_are_usage_errors(tmp_path, name):
    bus = LocalBus(tmp_path)
    with pytest.raises(UsageError, match="invalid topic name"):
        bus.producer().publish(name, [(None, b"v")])
    with pytest.raises(UsageError, match="invalid group name"):
        bus.consumer(name, ["events"])


def test_partition_of_a_key_is_stable_and_spread():
    assert partition_for(b"user-1", 12) == partition_for(b"user-1", 12)
    counts = Counter(partition_for(b"user-%d" % i, 12) for i in range(12_000))
    assert len(counts) == 12 and min(counts.values()) > 800


def test_one_producer_shared_by_many_threads(tmp_path):
    bus = LocalBus(tmp_path, LocalBusConfig(partitions=3))
    producer = bus.producer()

    def work(t: int) -> None:
        for i in range(100):
            producer.publish("events", [(b"user-%d" % (i % 7), b"%d:%d" % (t, i)), (None, b"x")])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = read_everything(bus)
    assert len(got) == 1600
    assert_dense(got)
    for t in range(8):
        mine = [int(m.value.split(b":")[1]) for m in got if m.value.startswith(b"%d:" % t)]
        assert sorted(mine) == list(range(100))
        for k in range(7):
            seq = [
                int(m.value.split(b":")[1])
                for m in got
                if m.key == b"user-%d" % k and m.value.startswith(b"%d:" % t)
            ]
            assert seq == sorted(seq), "one thread's records for a key stay in order"


def test_a_bus_path_that_cannot_be_a_directory_is_a_clear_error(tmp_path):
    (tmp_path / "bus").write_text("not a directory")
    with pytest.raises(BackendUnavailableError, match="cannot open the local bus"):
        LocalBus(tmp_path / "bus")


def test_a_failed_write_is_reported_and_the_log_stays_consistent(tmp_path, monkeypatch):
    import errno

    from clickloop.bus import log as log_module

    bus = LocalBus(tmp_path, LocalBusConfig(partitions=1))
    producer = bus.producer()
    producer.publish("events", [(b"k", b"before")])
    real = os.pwritev

    def disk_full(fd, buffers, offset):
        data = b"".join(buffers)
        real(fd, [data[: len(data) // 3]], offset)  # part of it lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(log_module.os, "pwritev", disk_full)
    with pytest.raises(BackendUnavailableError, match="could not store") as info:
        producer.publish("events", [(b"k", b"lost-%d" % i) for i in range(50)])
    assert "disk space" in (info.value.hint or "")
    monkeypatch.setattr(log_module.os, "pwritev", real)
    producer.publish("events", [(b"k", b"after")])
    got = read_everything(bus)
    assert [m.value for m in got] == [b"before", b"after"]
    assert_dense(got)


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_every_fsync_policy_keeps_what_was_published(tmp_path, fsync):
    bus = LocalBus(tmp_path, LocalBusConfig(partitions=2, fsync=fsync))
    p = bus.producer()
    for i in range(20):
        p.publish("events", [(b"k%d" % j, b"%d-%d" % (i, j)) for j in range(5)])
    got = read_everything(LocalBus(tmp_path))
    assert len(got) == 100
    assert_dense(got)


def test_segments_roll_and_old_ones_expire_with_retention(tmp_path):
    cfg = LocalBusConfig(partitions=1, segment_bytes=4096, retention="1s")
    bus = LocalBus(tmp_path, cfg)
    p = bus.producer()
    for i in range(40):
        p.publish("events", [(None, b"%04d" % i + b"-" * 500)])
    part = tmp_path / "events" / "0"
    assert len(list_segments(part)) >= 4
    c = bus.consumer("slow", ["events"])
    assert len(c.poll(max_messages=10, timeout=1)) == 10
    c.commit({("events", 0): 10})
    c.close()
    time.sleep(1.2)
    for i in range(40, 50):
        p.publish("events", [(None, b"%04d" % i + b"-" * 500)])
    kept = list_segments(part)
    assert kept[0] > 10, "expired segments were deleted, the active one kept"
    assert bus.end_offsets("events") == {0: 50}
    # the group's committed offset was deleted: it resumes at the oldest record kept
    rest = read_everything(bus, "slow")
    assert rest[0].offset == kept[0] and rest[-1].offset == 49
    assert [int(m.value[:4]) for m in rest] == list(range(kept[0], 50))


class LiveReader(threading.Thread):
    """Consumes while producers write (and die): every record must be whole, offsets dense."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.consumer = LocalBus(path, LocalBusConfig(partitions=3)).consumer("live", ["events"])
        self.stop = threading.Event()
        self.next: dict[int, int] = defaultdict(int)
        self.seen: list[tuple[str, int]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for m in self.consumer.poll(max_messages=1000, timeout=0.05):
                    assert m.offset == self.next[m.partition], "a gap or a repeat"
                    self.next[m.partition] += 1
                    self.seen.append(check(m.value))
        except BaseException as exc:  # handed to the test thread
            self.error = exc
        finally:
            self.consumer.close()


@pytest.mark.slow
def test_kill_9_of_a_producer_loses_no_acknowledged_record(tmp_path):
    rng = random.Random(7)
    acked_by_tag = {}
    live = LiveReader(tmp_path / "bus")
    live.start()
    for trial in range(4):
        tag = f"run{trial}"
        acks = tmp_path / f"{tag}.acks"
        acks.touch()
        proc = worker("produce", str(tmp_path / "bus"), tag, "0", str(acks))
        deadline = time.monotonic() + 30
        while acks.stat().st_size == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        lines = acks.read_text().split()
        assert lines, stderr_of(proc)
        acked_by_tag[tag] = int(lines[-1])
        # reopening recovers: a torn tail is cut, what was acknowledged is all there
        bus = LocalBus(tmp_path / "bus", LocalBusConfig(partitions=3))
        got = read_everything(bus, f"check{trial}")
        assert_dense(got)
        seen = defaultdict(set)
        for m in got:
            t, i = check(m.value)  # every served record is intact
            assert i not in seen[t], "a record appears twice"
            seen[t].add(i)
        for t, acked in acked_by_tag.items():
            assert set(range(acked)) <= seen[t], f"{t}: acknowledged records are missing"
            assert max(seen[t]) < acked + 200, "at most the batch in flight is extra"
        assert sum(bus.end_offsets("events").values()) == len(got)
    # the reader that ran through all of it saw the same records, each once, all intact
    deadline = time.monotonic() + 30
    while len(live.seen) < len(got) and live.error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    live.stop.set()
    live.join(10)
    assert live.error is None, repr(live.error)
    assert sorted(live.seen) == sorted(check(m.value) for m in got)


def test_a_producer_killed_half_way_through_a_write_leaves_no_visible_torn_record(tmp_path, caplog):
    bus_dir = tmp_path / "bus"
    live = LiveReader(bus_dir)
    live.start()
    acks = tmp_path / "tear.acks"
    proc = worker("tear", str(bus_dir), "torn", "600", str(acks))
    assert proc.wait(60) == -signal.SIGKILL, stderr_of(proc)
    assert acks.read_text().split()[-1] == "600"
    time.sleep(0.3)  # the live reader sits in front of the torn bytes, serving nothing of them
    assert live.error is None and sorted(i for _, i in live.seen) == list(range(600))
    part_sizes = {p: (bus_dir / "events" / str(p)) for p in range(3)}
    before = {p: sum(f.stat().st_size for f in d.glob("*.log")) for p, d in part_sizes.items()}
    with caplog.at_level("WARNING", logger="clickloop.bus.log"):
        bus = LocalBus(bus_dir, LocalBusConfig(partitions=3))
    assert "truncating" in caplog.text, "reopening found and cut the torn tail"
    after = {p: sum(f.stat().st_size for f in d.glob("*.log")) for p, d in part_sizes.items()}
    assert any(after[p] < before[p] for p in before)
    got = read_everything(bus)
    assert sorted(check(m.value)[1] for m in got) == list(range(600))
    assert_dense(got)
    # the log goes on: new records get the next offsets and the live reader receives them
    bus.producer().publish("events", [(b"key-%d" % i, payload("next", i)) for i in range(30)])
    deadline = time.monotonic() + 10
    while len(live.seen) < 630 and time.monotonic() < deadline:
        time.sleep(0.05)
    live.stop.set()
    live.join(10)
    assert live.error is None, repr(live.error)
    assert sorted(live.seen) == sorted(
        [("torn", i) for i in range(600)] + [("next", i) for i in range(30)]
    )


@pytest.mark.slow
def test_producer_processes_append_to_the_same_partitions_concurrently(tmp_path):
    procs = [
        worker("produce", str(tmp_path / "bus"), f"p{i}", "3000", str(tmp_path / f"p{i}.acks"))
        for i in range(3)
    ]
    for proc in procs:
        assert proc.wait(120) == 0, stderr_of(proc)
    got = read_everything(LocalBus(tmp_path / "bus"))
    assert len(got) == 9000
    assert_dense(got)
    order = defaultdict(list)
    for m in got:
        tag, i = check(m.value)
        order[(tag, m.key)].append(i)
    for (tag, key), seq in order.items():
        assert seq == sorted(seq), f"{tag} {key!r}: one producer's records for a key in order"
    assert {len(s) for s in order.values()} == {300}


@pytest.mark.slow
def test_consumer_processes_share_a_group_and_survive_a_member_killed(tmp_path):
    bus_dir = tmp_path / "bus"
    bus = LocalBus(bus_dir, LocalBusConfig(partitions=3))
    producer = bus.producer()
    outs = [tmp_path / "a.out", tmp_path / "b.out"]
    a = worker("consume", str(bus_dir), "lake", str(outs[0]))
    b = worker("consume", str(bus_dir), "lake", str(outs[1]))
    state = bus_dir / "groups" / "lake" / "state.json"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            owners = json.loads(state.read_text())["owners"] if state.exists() else {}
            if len(owners) == 3 and len(set(owners.values())) == 2:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the two members never split the partitions: {stderr_of(a)}")
        producer.publish("events", [(b"key-%d" % (i % 10), payload("m", i)) for i in range(3000)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(o.exists() and o.stat().st_size for o in outs):
                break
            time.sleep(0.05)
        assert all(o.exists() and o.stat().st_size for o in outs), "both members got records"
        os.kill(b.pid, signal.SIGKILL)
        b.wait(10)
        producer.publish(
            "events", [(b"key-%d" % (i % 10), payload("m", i)) for i in range(3000, 4000)]
        )
        want = {f"m:{i}" for i in range(4000)}
        deadline = time.monotonic() + 60  # the dead member's lease (2 s) must expire first
        while time.monotonic() < deadline:
            seen = Counter(line for o in outs for line in o.read_text().split())
            if want <= set(seen):
                break
            time.sleep(0.1)
        assert want <= set(seen), f"missing {len(want - set(seen))} records"
        # the killed member may have written one batch it never committed: re-read, not lost
        assert sum(seen.values()) - len(want) <= 100
        deadline = time.monotonic() + 10
        while bus.lag("lake", "events") != dict.fromkeys(range(3), 0):
            assert time.monotonic() < deadline, bus.lag("lake", "events")
            time.sleep(0.1)
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
