"""Bootstrap from the lake: lake-only, bus-only and both-places events give the batch values."""

from __future__ import annotations

import tempfile
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickloop.features import define
from clickloop.features.bootstrap import bootstrap
from clickloop.features.stream import FeatureStream
from clickloop.lake import Lake
from tests.unit.features.test_parity import BASE, FS, TICK, check_equal, event, to_table

placed = st.tuples(event, st.sampled_from(["lake", "lake", "bus", "both"]))


def lake_with(path: str, events: list[dict]) -> Lake:
    lake = Lake.open(path)
    if events:
        lake.append_events(to_table(events), source="import")
    return lake


@settings(max_examples=40, deadline=None)
@given(st.lists(placed, max_size=70), st.sampled_from([7 * 86_400, 60]), st.randoms())
def test_bootstrap_then_bus_equals_batch(items: list[tuple[dict, str]], horizon_s: int,
                                         rnd) -> None:  # fmt: skip
    """Events imported into the lake only, published on the bus only, or both (the stream
    ingester's copy): after the bootstrap and the bus, values equal the batch engine's over
    the union, each event counted once — except bus-only events older than the dedupe
    memory reaches (``clock - horizon``), which are left to the lake and counted."""
    for i, (e, _) in enumerate(items):
        e["id"] = f"e{i:04d}"
    in_lake = [e for e, where in items if where in ("lake", "both")]
    on_bus = [e for e, where in items if where in ("bus", "both")]
    rnd.shuffle(on_bus)
    stream = FeatureStream([FS], dedupe_horizon=timedelta(seconds=horizon_s))
    with tempfile.TemporaryDirectory() as d:
        lake = lake_with(d, in_lake)
        report = bootstrap(stream, lake, batch_rows=16)  # several seed steps
        lake.close()
    assert report.events == len(in_lake)
    floor = stream.floor
    for start in range(0, len(on_bus), 6):
        stream.apply(to_table(on_bus[start : start + 6]))
    ts = {e["id"]: BASE + e["k"] * TICK + e["jitter"] for e, _ in items}
    lost = [e for e, where in items if where == "bus" and floor is not None and ts[e["id"]] < floor]
    truth = in_lake + [e for e, where in items if where == "bus" and e not in lost]
    assert stream.stats.before_bootstrap == len(lost)
    assert stream.stats.duplicates == sum(1 for _, where in items if where == "both")
    assert stream.stats.sets["s"].too_late == 0
    check_equal(stream, to_table(truth), stream.clock)


def test_bootstrap_reads_only_what_the_windows_need(tmp_path) -> None:
    """A set without lifetime aggregations reads its longest window (+ hop) back from the
    clock; a set with one reads all history."""
    windowed = define("w", entity="user_id", aggregate=[{"op": "count", "windows": ["10s"]}])
    lifetime = define("l", entity="user_id", aggregate=[{"op": "count"}])
    evs = [{"user_id": "a", "k": k, "jitter": 0, "type": "view", "kind": None, "price": None,
            "id": f"e{k}"} for k in range(0, 200, 10)]  # fmt: skip
    lake = lake_with(str(tmp_path / "lake"), evs)
    only_w = FeatureStream([windowed])
    report = bootstrap(only_w, lake)
    assert only_w.values("w", "a")["w__count_10s"] == 3  # k = 170, 180, 190: 85 s … 95 s
    assert report.read_from["w"] is not None and report.events == 3  # 84 s on: 10 s + 1 s hop
    both = FeatureStream([windowed, lifetime])
    report = bootstrap(both, lake)
    assert report.read_from["l"] is None and report.events == len(evs)
    assert both.values("l", "a")["l__count"] == len(evs)
    assert both.values("w", "a")["w__count_10s"] == 3
    assert both.stats.sets["w"].applied == 3  # older events, read for "l", are not applied to "w"
    assert both.clock == BASE + 190 * TICK + 1
    with pytest.raises(ValueError, match="empty"):
        bootstrap(both, lake)  # never on top of a state
    lake.close()


def test_an_empty_lake_leaves_the_stream_empty(tmp_path) -> None:
    stream = FeatureStream([FS])
    report = bootstrap(stream, Lake.open(str(tmp_path / "lake")))
    assert (report.events, report.clock, stream.floor) == (0, None, None)
    stream.apply(to_table([{"user_id": "a", "k": 1, "jitter": 0, "type": "view", "kind": "x",
                            "price": "1", "id": "x"}]))  # fmt: skip
    assert stream.values("s", "a")["s__count"] == 1
    assert np.isfinite(stream.clock)
