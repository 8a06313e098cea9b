"""MessageBatch: the column-wise poll result agrees with the messages it stands for."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickloop.bus import Message, MessageBatch
from clickloop.bus.local import LocalBus
from clickloop.config.infra import LocalBusConfig
from clickloop.errors import UsageError


@st.composite
def message_lists(draw: st.DrawFn) -> list[Message]:
    """Messages of up to 2 topics × 3 partitions, offsets ascending per partition."""
    n = draw(st.integers(0, 40))
    nxt: dict[tuple[str, int], int] = defaultdict(int)
    out = []
    for _ in range(n):
        tp = (draw(st.sampled_from(["events", "exposures"])), draw(st.integers(0, 2)))
        nxt[tp] += draw(st.integers(1, 3))  # gaps happen (compaction, transactions)
        key = draw(st.none() | st.binary(max_size=4))
        out.append(Message(tp[0], tp[1], nxt[tp], key, draw(st.binary(max_size=8)), 1000 + nxt[tp]))
    return out


def expected_next(msgs: list[Message]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for m in msgs:
        out[(m.topic, m.partition)] = max(out.get((m.topic, m.partition), 0), m.offset + 1)
    return out


@given(message_lists())
def test_a_batch_round_trips_its_messages(msgs):
    b = MessageBatch.from_messages(msgs)
    assert len(b) == len(msgs) and list(b) == msgs
    assert b.next_offsets() == expected_next(msgs)
    groups = b.by_partition()
    assert set(groups) == {(m.topic, m.partition) for m in msgs}
    for (topic, part), idx in groups.items():
        assert [msgs[i] for i in idx] == [
            m for m in msgs if (m.topic, m.partition) == (topic, part)
        ]
    assert [b.origin(i) for i in range(len(b))] == [
        f"{m.topic}/{m.partition}@{m.offset}" for m in msgs
    ]


@given(st.lists(message_lists(), max_size=4), st.data())
def test_concat_and_take_keep_every_column(parts, data):
    whole = [m for p in parts for m in p]
    b = MessageBatch.concat([MessageBatch.from_messages(p) for p in parts])
    assert list(b) == whole  # topics of different parts are merged, keys/timestamps kept
    if whole:
        idx = data.draw(st.lists(st.integers(0, len(whole) - 1), max_size=10))
        assert list(b.take(idx)) == [whole[i] for i in idx]


def test_keys_and_timestamps_load_only_when_asked():
    calls = []

    def extras():
        calls.append(1)
        return [b"k1", None], np.array([5, 6])

    b = MessageBatch([b"a", b"b"], [0, 0], [0, 1], topics=("events",), extras=extras)
    assert b.next_offsets() == {("events", 0): 2} and not calls
    sub = b.take([1])
    assert sub.values == [b"b"] and not calls
    assert sub[0] == Message("events", 0, 1, None, b"b", 6) and calls == [1]
    assert b.keys == [b"k1", None] and calls == [1]


def test_malformed_batches_are_refused_with_a_reason():
    with pytest.raises(UsageError, match="differ in length"):
        MessageBatch([b"a"], [0, 1], [0, 1], topics=("events",))
    with pytest.raises(UsageError, match="topic_ids"):
        MessageBatch([b"a"], [0], [0], topics=("events", "exposures"))
    with pytest.raises(UsageError, match="indexed by position"):
        MessageBatch([b"a"], [0], [0], topics=("events",))["x"]  # type: ignore[index]


def test_local_poll_batch_splits_a_stored_batch_at_max_messages(tmp_path):
    """A stored batch larger than max_messages is handed out over several polls, in order."""
    bus = LocalBus(tmp_path, LocalBusConfig(partitions=1))
    bus.producer().publish("events", [(b"k", b"%d" % i) for i in range(250)])
    c = bus.consumer("g", ["events"])
    sizes, values, offsets, keys, stamps = [], [], [], [], []
    while len(values) < 250:
        b = c.poll_batch(max_messages=60, timeout=1.0)
        sizes.append(len(b))
        keys += b.keys
        stamps += b.timestamps_ms.tolist()
        values += b.values
        offsets += b.offsets.tolist()
        if len(values) == 120:  # poll() in between continues where poll_batch stopped
            m = c.poll(max_messages=5, timeout=1.0)
            values += [x.value for x in m]
            offsets += [x.offset for x in m]
    assert values == [b"%d" % i for i in range(250)] and offsets == list(range(250))
    assert max(sizes) == 60
    assert keys == [b"k"] * len(keys) and len(keys) == 245
    assert all(ts > 1_600_000_000_000 for ts in stamps)
    c.close()
    bus.close()
