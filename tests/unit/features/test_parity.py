"""Batch/stream parity: the same events give the same values, whatever their arrival order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from clickloop.events.schema import EVENT_SCHEMA
from clickloop.features import define
from clickloop.features.pit import compute
from clickloop.features.prepare import prepare
from clickloop.features.source import entity_codes, rows_from_arrow
from clickloop.features.stream import FeatureStream
from tests.unit.features.oracle import same

BASE = 1_793_000_000_000_000  # µs, a whole second
TICK = 500_000
SCHEMA = pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA])

FS = define(
    "s",
    entity="user_id",
    where="type != 'ignored'",
    derive={
        "kind": "coalesce(props.kind, 'none')",
        "price": "num(props.price)",
        # inputs with a single need each take the engine's specialised fast paths
        "w": "num(props.price) * 2",
        "k2": "lower(props.kind)",
        "k3": "upper(props.kind)",
    },
    allowed_lateness="1h",
    aggregate=[
        {"op": "count", "windows": ["10s", "20s", "2m", "lifetime"]},
        {"op": "sum", "column": "price", "windows": ["10s", "lifetime"]},
        {"op": "mean", "column": "price", "windows": ["20s"]},
        {"op": "min", "column": "price", "windows": ["10s", "2m", "lifetime"]},
        {"op": "max", "column": "price", "windows": ["20s", "lifetime"]},
        {"op": "first", "column": "kind", "windows": ["10s", "lifetime"]},
        {"op": "last", "column": "props.kind", "windows": ["20s"]},
        {"op": "since_last", "windows": ["10s", "lifetime"]},
        {"op": "distinct_count", "column": "kind", "windows": ["10s", "2m", "lifetime"]},
        {"op": "approx_distinct_count", "column": "props.kind", "windows": ["20s", "lifetime"]},
        {"op": "top_k", "column": "kind", "k": 2, "windows": ["20s", "lifetime"]},
        {"op": "histogram", "column": "kind", "k": 3, "windows": ["2m"]},
        {"op": "count", "column": "props.price", "windows": ["10s"], "name": "priced"},
        {"op": "sum", "column": "w", "windows": ["10s", "lifetime"]},
        {"op": "count", "column": "k2", "windows": ["20s", "lifetime"]},
        {"op": "distinct_count", "column": "k3", "windows": ["20s"]},
    ],
)

event = st.fixed_dictionaries({
    "user_id": st.sampled_from(["a", "b", "c"]),
    "k": st.integers(0, 400),
    "jitter": st.sampled_from([0, 0, 0, -1]),  # -1 µs: the clock lands on tile edges
    "type": st.sampled_from(["view", "view", "click", "ignored"]),
    "kind": st.one_of(st.none(), st.sampled_from(["x", "y", "z", "w"])),
    "price": st.one_of(st.none(), st.sampled_from(["1.5", "2", "-3.25", "10", "oops"])),
})  # fmt: skip


def to_table(evs: list[dict]) -> pa.Table:
    rows = []
    for i, e in enumerate(evs):
        props = [(k, v) for k, v in (("kind", e["kind"]), ("price", e["price"])) if v is not None]
        ts = BASE + e["k"] * TICK + e.get("jitter", 0)
        rows.append({"event_id": e.get("id", f"e{i:04d}"), "ts": ts, "received_at": ts,
                     "type": e["type"], "user_id": e["user_id"], "props": props})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def batch_values(fs, table: pa.Table, queries: list[tuple[str, int]]) -> dict[str, list]:
    prepared = prepare(fs, table)
    order = np.lexsort((prepared.column("event_id").to_numpy(zero_copy_only=False),
                        prepared.column("ts").to_numpy(),
                        prepared.column("entity").to_numpy(zero_copy_only=False)))  # fmt: skip
    rows, ents = rows_from_arrow(fs, prepared.take(pa.array(order)))
    qe = entity_codes(ents, pa.array([q[0] for q in queries], pa.string()))
    qt = np.array([q[1] for q in queries], np.int64)
    got = compute(fs, rows, qe, qt)
    return {k: v.to_pylist() for k, v in got.items()}


def check_equal(stream: FeatureStream, table: pa.Table, as_of: int, fs=FS) -> None:
    entities = ["a", "b", "c", "never"]
    want = batch_values(fs, table, [(e, as_of) for e in entities])
    for i, e in enumerate(entities):
        got = stream.values("s", e)
        for name in fs.names:
            assert same(got[name], want[name][i]), (name, e, as_of, got[name], want[name][i])


@given(st.lists(event, max_size=80), st.lists(st.integers(0, 420), max_size=4), st.randoms())
def test_stream_equals_batch_at_every_checkpoint(events: list[dict], cuts: list[int], rnd) -> None:
    """Events arrive shuffled inside time buckets (late, within the allowed lateness);
    at each cut T — once everything before T and nothing after has arrived — the stream's
    values equal the batch engine's as of T."""
    for i, e in enumerate(events):
        e["id"] = f"e{i:04d}"
    stream = FeatureStream([FS])
    seen: list[dict] = []
    for lo, hi in zip([0, *sorted(cuts)], [*sorted(cuts), 421], strict=True):
        bucket = [e for e in events if lo <= e["k"] < hi]
        rnd.shuffle(bucket)  # arrival order ≠ event time order
        for start in range(0, len(bucket), 7):  # several micro-batches per bucket
            stream.apply(to_table(bucket[start : start + 7]))
        seen += bucket
        as_of = BASE + hi * TICK
        stream.advance(as_of)
        check_equal(stream, to_table(seen) if seen else to_table([]), as_of)
    assert stream.stats.sets["s"].too_late == 0


@settings(max_examples=40)
@given(st.lists(event, min_size=1, max_size=60), st.randoms())
def test_too_late_events_are_counted_and_the_rest_agrees(events: list[dict], rnd) -> None:
    fs_tight = define("s", **{**FS.source, "allowed_lateness": "5s"})
    stream = FeatureStream([fs_tight])
    for i, e in enumerate(events):
        e["id"] = f"e{i:04d}"
    rnd.shuffle(events)
    accepted, newest = [], None
    for e in events:  # the lateness rule, written out
        t = BASE + e["k"] * TICK + e["jitter"]
        if e["type"] != "ignored" and newest is not None and t < newest - 5_000_000:
            continue
        accepted.append(e)
        newest = t if newest is None else max(newest, t)
    for start in range(0, len(events), 5):
        stream.apply(to_table(events[start : start + 5]))
    dropped = len([e for e in events if e["type"] != "ignored"]) - len(
        [e for e in accepted if e["type"] != "ignored"]
    )
    assert stream.stats.sets["s"].too_late == dropped
    check_equal(stream, to_table(accepted), stream.clock, fs_tight)


def test_duplicates_count_once() -> None:
    evs = [{"user_id": "a", "k": 3, "type": "view", "kind": "x", "price": "2", "id": "same"}] * 3
    stream = FeatureStream([FS])
    stream.apply(to_table(evs[:2]))
    stream.apply(to_table(evs[2:]))
    assert stream.stats.duplicates == 2
    assert stream.values("s", "a")["s__count"] == 1


def test_windows_decay_without_new_events_and_are_emitted() -> None:
    stream = FeatureStream([FS])
    stream.apply(to_table([{"user_id": "a", "k": 0, "type": "view", "kind": "x", "price": "2"}]))
    first = stream.emit("s")
    assert first.column("s__count_10s").to_pylist() == [1]
    assert stream.emit("s").num_rows == 0  # nothing changed
    stream.advance(BASE + 12_000_000)  # the 10s window (1s hop) has let go of the event
    again = stream.emit("s")
    assert again.column("entity").to_pylist() == ["a"]
    assert again.column("s__count_10s").to_pylist() == [0]
    assert again.column("s__count").to_pylist() == [1]


def test_a_late_event_whose_tile_just_left_the_window() -> None:
    # clock = newest + 1 µs = 20 s exactly; the late event's 1 s tile [9 s, 10 s) leaves the
    # 10 s window at 9 + 1 + 10 = 20 s: it counts for the 20 s window, not the 10 s one
    evs = [
        {"user_id": "a", "k": 40, "jitter": -1, "type": "view", "kind": "x", "price": "1",
         "id": "late-1"},
        {"user_id": "a", "k": 19, "type": "view", "kind": "y", "price": "2", "id": "late-2"},
    ]  # fmt: skip
    stream = FeatureStream([FS])
    for e in evs:
        stream.apply(to_table([e]))
    assert stream.clock == BASE + 20_000_000
    got = stream.values("s", "a")
    assert (got["s__count_10s"], got["s__count_20s"]) == (1, 2)
    check_equal(stream, to_table(evs), stream.clock)


def test_lateness_is_judged_per_partition() -> None:
    """A partition catching up on a backlog is not late; a late event within a partition is."""
    day = 86_400 * 2  # ticks of half a second
    stream = FeatureStream([FS])
    ahead = to_table([{"user_id": "a", "k": 3 * day, "type": "view", "kind": "x", "price": "1",
                       "id": "p0-1"}])  # fmt: skip
    behind = to_table([{"user_id": "b", "k": day, "type": "view", "kind": "x", "price": "1",
                        "id": "p1-1"}])  # fmt: skip
    stream.apply(ahead, np.array([0]))
    stream.apply(behind, np.array([1]))  # two days older, but partition 1 had seen nothing newer
    assert stream.stats.sets["s"].too_late == 0
    assert stream.values("s", "b")["s__count"] == 1
    catch_up = to_table([{"user_id": "b", "k": 3 * day + 10, "type": "view", "kind": "y",
                          "price": "1", "id": "p1-2"}])  # fmt: skip
    stream.apply(catch_up, np.array([1]))
    late = to_table(
        [
            {
                "user_id": "a",
                "k": 3 * day - 2 * 7200,
                "type": "view",
                "kind": "z",
                "price": "1",
                "id": "p0-2",
            }
        ]
    )  # 2 h older than both partitions' newest
    stream.apply(late, np.array([0]))
    assert stream.stats.sets["s"].too_late == 1
    assert stream.values("s", "a")["s__count"] == 1


def test_entities_with_only_windows_are_forgotten_once_empty() -> None:
    fs = define("w", entity="user_id", aggregate=[
        {"op": "count", "windows": ["10s", "2m"]},
        {"op": "distinct_count", "column": "props.kind", "windows": ["10s"]},
    ])  # fmt: skip
    stream = FeatureStream([fs])
    stream.apply(to_table([{"user_id": "a", "k": 0, "type": "view", "kind": "x", "price": "1"}]))
    assert "a" in stream.states["w"].entities
    stream.emit("w")
    stream.advance(BASE + 200_000_000)  # past 2m + hop: nothing of "a" is in any window
    assert "a" not in stream.states["w"].entities  # memory is returned
    row = stream.emit("w").to_pylist()
    assert row == [{"entity": "a", "_event_ts": row[0]["_event_ts"], "w__count_10s": 0,
                    "w__count_2m": 0, "w__distinct_count_props_kind_10s": 0}]  # fmt: skip
    assert "a" in stream.states["w"].changed  # the checkpoint deletes its saved state


@settings(max_examples=50)
@given(st.lists(event, max_size=60), st.randoms())
def test_one_event_at_a_time_equals_micro_batches(events: list[dict], rnd) -> None:
    from clickloop.features.state import SetState

    for i, e in enumerate(events):
        e["id"] = f"e{i:04d}"
    rnd.shuffle(events)
    table = to_table(events)
    stream = FeatureStream([FS])
    for start in range(0, len(events), 9):
        stream.apply(to_table(events[start : start + 9]))
    single = SetState(FS)
    rows = prepare(FS, table)
    ts = rows.column("ts").to_pylist()
    cols = [rows.column(f"c{i}").to_pylist() for i in range(len(FS.inputs))]
    for r, (e, eid) in enumerate(
        zip(rows.column("entity").to_pylist(), rows.column("event_id").to_pylist(), strict=True)
    ):
        single.advance(max(single.clock, ts[r] + 1))
        single.add(e, ts=ts[r], eid=eid, values=[c[r] for c in cols])
    single.advance(stream.clock)
    for e in ("a", "b", "c"):
        got, want = stream.values("s", e), single.values(e)
        assert all(same(got[k], want[k]) for k in want), e
    # many at once (what the online store gets) equals one by one
    names = ["c", "never", "a", "b"]
    cols = stream.states["s"].columns(names)
    for r, e in enumerate(names):
        one = stream.values("s", e)
        assert all(same(cols[k][r], one[k]) for k in one), e
