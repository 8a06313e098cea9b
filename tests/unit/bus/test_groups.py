"""Consumer groups of the local bus: assignment, hand-over, fencing, expiry — and a
model-based test of random publish / poll / commit / reopen sequences."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from clickloop.bus import PartitionsRevokedError
from clickloop.bus.groups import GroupMember, assign
from clickloop.bus.local import LocalBus, partition_for
from clickloop.config.infra import LocalBusConfig
from clickloop.errors import UsageError


@given(
    st.dictionaries(
        st.text("abcdef", min_size=1, max_size=4),
        st.lists(st.sampled_from(["t1", "t2", "t3"]), min_size=1, unique=True),
        min_size=1,
        max_size=6,
    ),
    st.fixed_dictionaries(
        {"t1": st.integers(1, 9), "t2": st.integers(1, 9), "t3": st.integers(1, 9)}
    ),
)
def test_assignment_covers_each_subscribed_partition_once_and_is_balanced(members, parts):
    got = assign(members, parts)
    assert got == assign(dict(reversed(members.items())), parts), "order of members is irrelevant"
    owned = [tp for tps in got.values() for tp in tps]
    assert len(owned) == len(set(owned))
    subscribed = {t for ts in members.values() for t in ts}
    assert set(owned) == {(t, p) for t in subscribed for p in range(parts[t])}
    for m, tps in got.items():
        assert all(t in members[m] for t, _ in tps)
    if all(set(ts) == {"t1", "t2", "t3"} for ts in members.values()):
        sizes = [len(v) for v in got.values()]
        assert max(sizes) - min(sizes) <= 1


def member(path: Path, group: str = "g", timeout: float = 10.0) -> GroupMember:
    return GroupMember(path, group, ["t"], partitions=lambda t: 4, session_timeout=timeout)


def test_partitions_move_only_after_their_owner_released_them(tmp_path):
    a = member(tmp_path)
    everything = {("t", p) for p in range(4)}
    assert set(a.sync(set())) == everything
    b = member(tmp_path)
    assert b.sync(set()) == {} and b.pending, "b waits: a still owns everything"
    kept = a.sync(everything)
    assert len(kept) == 2 and set(kept.values()) == {None}, "a keeps reading where it is"
    got = b.sync(set())
    assert set(got) == everything - set(kept) and set(got.values()) == {0} and not b.pending
    a.leave()
    assert set(b.sync(set(got))) == everything
    b.leave()


def test_commit_is_fenced_by_ownership_and_all_or_nothing(tmp_path):
    a = member(tmp_path)
    a.sync(set())
    a.commit({("t", p): 5 + p for p in range(4)})
    b = member(tmp_path)
    b.sync(set())
    kept = set(a.sync({("t", p) for p in range(4)}))  # a releases two partitions
    lost = sorted({("t", p) for p in range(4)} - kept)
    (k0, _) = sorted(kept)
    with pytest.raises(PartitionsRevokedError) as info:
        a.commit({k0: 50, lost[0]: 50})
    assert info.value.partitions == [lost[0]]
    assert a.committed([k0, lost[0]]) == {k0: 5 + k0[1], lost[0]: 5 + lost[0][1]}, "nothing stored"
    a.commit({k0: 60})
    assert b.sync(set()) == {tp: 5 + tp[1] for tp in lost}, "b starts at the group's commits"
    with pytest.raises(UsageError, match="integers >= 0"):
        a.commit({k0: -1})
    with pytest.raises(UsageError, match="reads t"):
        a.commit({("other", 0): 1})
    a.leave()
    b.leave()


def test_a_silent_member_is_expelled_and_its_commits_refused(tmp_path):
    a = member(tmp_path, timeout=0.5)
    a.sync(set())
    a._stop.set()  # a's process freezes: no more heartbeats
    a._thread.join()
    b = member(tmp_path, timeout=0.5)
    b.sync(set())
    time.sleep(0.8)
    assert sorted(b.sync(set())) == [("t", p) for p in range(4)]
    with pytest.raises(PartitionsRevokedError):
        a.commit({("t", 0): 1})
    # when a wakes up it rejoins and restarts from the group's commits
    again = a.sync({("t", p) for p in range(4)})
    assert all(v is not None for v in again.values())
    b.leave()
    a.leave()


def test_a_consumer_that_stops_polling_loses_its_partitions(tmp_path):
    bus = LocalBus(tmp_path, LocalBusConfig(partitions=2, session_timeout="1s"))
    stuck = bus.consumer("g", ["events"])
    stuck._member.max_poll_interval = 0.3
    other = bus.consumer("g", ["events"])
    deadline = time.monotonic() + 10
    while len(other.assignment()) < 2 and time.monotonic() < deadline:
        other.poll(10, 0.1)
    assert len(other.assignment()) == 2
    other.close()
    stuck.close()


# -- model-based: random sequences against a model of the log -------------------------------

PARTS = 3


class LocalBusModel(RuleBasedStateMachine):
    """One consumer, so it owns every partition; the model predicts every poll exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="bus-model-"))
        self.cfg = LocalBusConfig(partitions=PARTS, segment_bytes=600, fsync="never")
        self.bus = LocalBus(self.dir, self.cfg)
        self.producer = self.bus.producer()
        self.consumer = self.bus.consumer("g", ["events"])
        self.log: dict[int, list[bytes]] = defaultdict(list)  # partition → values
        self.committed = dict.fromkeys(range(PARTS), 0)
        self.position = dict.fromkeys(range(PARTS), 0)
        self.key_partition: dict[bytes, int] = {}
        self.n = 0

    @rule(keys=st.lists(st.sampled_from([b"a", b"b", b"c", b"d", b"e", None]), max_size=30))
    def publish(self, keys):
        records = []
        for k in keys:
            records.append((k, b"v%d" % self.n + b"." * (self.n % 50)))
            self.n += 1
        self.producer.publish("events", records)
        for m in self._locate(records):
            self.log[m[0]].append(m[1])

    def _locate(self, records):
        """Where the records went, read back through a throw-away group; checked for sense."""
        peek = self.bus.consumer(f"peek{self.n}", ["events"])
        peek.commit({("events", p): len(self.log[p]) for p in range(PARTS)})
        peek.close()
        peek = self.bus.consumer(f"peek{self.n}", ["events"])
        fresh = []
        while batch := peek.poll(1000, 0):
            fresh += batch
        peek.close()
        assert sorted(m.value for m in fresh) == sorted(v for _, v in records)
        key_of = {v: k for k, v in records}
        order = {v: i for i, (_, v) in enumerate(records)}
        placed = sorted(fresh, key=lambda m: (m.partition, m.offset))
        for p in range(PARTS):
            mine = [order[m.value] for m in placed if m.partition == p]
            assert mine == sorted(mine), "a partition keeps the order of publish"
        for m in placed:
            k = key_of[m.value]
            assert k is None or m.partition == partition_for(k, PARTS)
        return [(m.partition, m.value) for m in placed]

    @rule(n=st.integers(1, 40))
    def poll(self, n):
        got = self.consumer.poll(max_messages=n, timeout=0)
        available = sum(len(self.log[p]) - self.position[p] for p in range(PARTS))
        assert len(got) == min(n, available)
        for m in got:
            assert m.offset == self.position[m.partition]
            assert m.value == self.log[m.partition][m.offset]
            self.position[m.partition] += 1

    @rule()
    def commit(self):
        self.consumer.commit({("events", p): o for p, o in self.position.items()})
        self.committed = dict(self.position)

    @rule()
    def reopen_consumer(self):
        self.consumer.close()
        self.consumer = self.bus.consumer("g", ["events"])
        self.position = dict(self.committed)

    @precondition(lambda self: self.n > 0)
    @rule()
    def reopen_bus(self):
        self.consumer.close()
        self.producer.close()
        self.bus.close()
        self.bus = LocalBus(self.dir, self.cfg)
        self.producer = self.bus.producer()
        self.consumer = self.bus.consumer("g", ["events"])
        self.position = dict(self.committed)

    @invariant()
    def offsets_match_the_model(self):
        assert self.bus.end_offsets("events") == {p: len(self.log[p]) for p in range(PARTS)}
        assert self.bus.lag("g", "events") == {
            p: len(self.log[p]) - self.committed[p] for p in range(PARTS)
        }

    def teardown(self) -> None:
        self.consumer.close()
        self.producer.close()
        shutil.rmtree(self.dir, ignore_errors=True)


LocalBusModel.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_local_bus_against_a_model = LocalBusModel.TestCase
