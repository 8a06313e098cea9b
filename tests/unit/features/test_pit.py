"""The vectorised point-in-time kernel against a naive scan, on random rows and queries."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from clickloop.features import define
from clickloop.features.pit import Rows, compute
from clickloop.features.source import entity_codes, to_column
from tests.unit.features.oracle import expected, same

BASE = 1_793_000_000_000_000  # 2026-10-26, µs
TICK = 500_000  # rows fall on half seconds so that ties and hop edges are common

ALL_OPS = define(
    "s",
    entity="user_id",
    aggregate=[
        {"op": "count", "windows": ["10s", "20s", "2m", "lifetime"]},
        {"op": "count", "column": "props.price", "windows": ["10s"]},
        {"op": "sum", "column": "props.price", "windows": ["10s", "lifetime"]},
        {"op": "mean", "column": "props.price", "windows": ["20s"]},
        {"op": "min", "column": "props.price", "windows": ["10s", "2m", "lifetime"]},
        {"op": "max", "column": "props.price", "windows": ["10s", "2m", "lifetime"]},
        {
            "op": "min",
            "column": "props.price",
            "windows": ["10s"],
            "default": -1,
            "name": "min_or_default",
        },
        {"op": "first", "column": "props.cat", "windows": ["10s", "lifetime"]},
        {"op": "last", "column": "props.cat", "windows": ["10s", "lifetime"]},
        {"op": "last", "column": "props.price", "windows": ["2m"]},
        {"op": "since_last", "windows": ["10s", "lifetime"]},
        {"op": "distinct_count", "column": "props.cat", "windows": ["10s", "2m", "lifetime"]},
        {"op": "distinct_count", "column": "props.price", "windows": ["20s"]},
        {"op": "approx_distinct_count", "column": "props.cat", "windows": ["20s", "lifetime"]},
        {"op": "top_k", "column": "props.cat", "k": 2, "windows": ["10s", "lifetime"]},
        {"op": "histogram", "column": "props.cat", "k": 3, "windows": ["2m"]},
    ],
)
KINDS = {"num(props.price)": "number", "props.price": "string", "props.cat": "string"}

row = st.fixed_dictionaries({
    "entity": st.sampled_from(["a", "b", "c"]),
    "ts": st.integers(0, 300).map(lambda k: BASE + k * TICK),
    "num(props.price)": st.one_of(st.none(), st.sampled_from([1.5, -2.0, 3.25, 10.0, 0.1])),
    "props.cat": st.one_of(st.none(), st.sampled_from(["x", "y", "z", "w", "v"])),
})  # fmt: skip
query = st.tuples(
    st.one_of(st.sampled_from(["a", "b", "c", "never"]), st.none()),
    st.tuples(st.integers(-5, 320), st.sampled_from([0, 0, 1, -1])).map(
        lambda kd: BASE + kd[0] * TICK + kd[1]
    ),
)


def build(rows: list[dict]) -> tuple[Rows, pa.Array]:
    for i, r in enumerate(rows):
        r["eid"] = f"e{i:05d}"
        p = r.get("num(props.price)")
        r["props.price"] = None if p is None else repr(p)
    rows.sort(key=lambda r: (r["entity"], r["ts"], r["eid"]))
    ents = pa.array([r["entity"] for r in rows], pa.string())
    uniq = pa.array(sorted(set(ents.to_pylist())), pa.string())
    cols = {
        key: to_column(kind, pa.array([r[key] for r in rows],
                                      pa.float64() if kind == "number" else pa.string()))
        for key, kind in KINDS.items()
    }  # fmt: skip
    codes = entity_codes(uniq, ents)
    ts = np.array([r["ts"] for r in rows], np.int64)
    return Rows(codes, ts, cols), uniq


# offsets from a row's time that land on window edges: the row itself, just after it,
# and where it enters or leaves each window (window + hop boundaries)
EDGES = [
    0,
    1,
    -1,
    TICK,
    10_000_000,
    10_000_001,
    11_000_000,
    20_000_000,
    21_000_000,
    120_000_000,
    130_000_000,
    130_000_001,
]


@given(st.lists(row, max_size=60), st.lists(query, max_size=10), st.data())
def test_kernel_matches_a_naive_scan(
    rows: list[dict], queries: list[tuple], data: st.DataObject
) -> None:
    if rows:  # most queries sit on the edges of some row's windows
        near = st.tuples(st.sampled_from(rows), st.sampled_from(EDGES))
        for r, d in data.draw(st.lists(near, min_size=1, max_size=20)):
            queries.append((r["entity"], r["ts"] + d))
    if not queries:
        queries.append(("a", BASE))
    kernel_rows, uniq = build(rows)
    keys = pa.array([q[0] for q in queries], pa.string())
    qe = entity_codes(uniq, keys)
    qt = np.array([q[1] for q in queries], np.int64)
    got = compute(ALL_OPS, kernel_rows, qe, qt)
    want = expected(ALL_OPS, rows, queries, KINDS)
    for i, w in enumerate(want):
        for name, v in w.items():
            g = got[name][i].as_py()
            assert same(g, v), (name, queries[i], g, v)


def test_an_event_at_the_query_time_never_counts() -> None:
    rows = [
        {"entity": "a", "ts": BASE + 4 * TICK, "num(props.price)": 5.0, "props.cat": "x"},
        {"entity": "a", "ts": BASE + 8 * TICK, "num(props.price)": 7.0, "props.cat": "y"},
    ]
    kernel_rows, uniq = build(rows)
    qe = entity_codes(uniq, pa.array(["a", "a", "a"]))
    qt = np.array([BASE + 4 * TICK, BASE + 4 * TICK + 1, BASE + 8 * TICK], np.int64)
    got = compute(ALL_OPS, kernel_rows, qe, qt)
    assert got["s__count_10s"].to_pylist() == [0, 1, 1]
    assert got["s__last_props_cat"].to_pylist() == [None, "x", "x"]
    assert got["s__sum_props_price"].to_pylist() == [0.0, 5.0, 5.0]
    assert got["s__min_or_default_10s"].to_pylist() == [-1.0, 5.0, 5.0]


def test_heavy_entities_cost_log_time_not_their_volume() -> None:
    # one entity with 400k rows and 200k queries: a range join would need ~1e10 row pairs
    n, q = 400_000, 200_000
    rng = np.random.default_rng(1)
    ts = np.sort(BASE + rng.integers(0, 7 * 86_400_000_000, n))
    fs = define("h", entity="user_id", aggregate=[
        {"op": "count", "windows": ["1h", "7d"]},
        {"op": "max", "column": "props.v", "windows": ["1d"]},
        {"op": "distinct_count", "column": "props.k", "windows": ["1d"]},
    ])  # fmt: skip
    cols = {
        "num(props.v)": to_column("number", pa.array(rng.random(n))),
        "props.k": to_column("string", pa.array(rng.integers(0, 5000, n).astype(str))),
    }
    rows = Rows(np.zeros(n, np.int64), ts, cols)
    qt = np.sort(BASE + rng.integers(0, 8 * 86_400_000_000, q))
    got = compute(fs, rows, np.zeros(q, np.int64), qt)
    counts = got["h__count_7d"].to_numpy()
    assert counts.max() <= n and (np.diff(counts[qt < BASE + 7 * 86_400_000_000]) >= 0).all()


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(-3, 3)), max_size=40),
    st.lists(st.tuples(st.integers(-1, 6), st.integers(-5, 5)), min_size=1, max_size=20),
    st.sampled_from([1, 10**12]),  # a small or a vast time scale (ranked keys)
)
def test_index_counts_rows_before_a_time(pairs, queries, scale) -> None:
    from clickloop.features.pit import Index

    pairs.sort()
    ent = np.array([p[0] * (10**6 if scale > 1 else 1) for p in pairs], np.int64)
    t = np.array([p[1] * scale for p in pairs], np.int64)
    idx = Index(ent, t)
    for e, q in queries:
        e *= 10**6 if scale > 1 else 1
        qe, qt = np.array([e], np.int64), np.array([q * scale], np.int64)
        mine = [(a, b) for a, b in zip(ent.tolist(), t.tolist(), strict=True) if a == e]
        before = int(idx.pos(qe, qt)[0] - idx.start(qe)[0]) if e >= 0 else 0
        upto = int(idx.pos(qe, qt, inclusive=True)[0] - idx.start(qe)[0]) if e >= 0 else 0
        assert before == sum(1 for _, b in mine if b < q * scale)
        assert upto == sum(1 for _, b in mine if b <= q * scale)


def test_rows_at_the_same_microsecond_are_ordered_by_event_id() -> None:
    from clickloop.features.source import rows_from_arrow

    fs = define("t", entity="user_id", aggregate=[
        {"op": "first", "column": "props.v"}, {"op": "last", "column": "props.v"}])  # fmt: skip
    table = pa.table({
        "entity": ["u", "u", "u", "w", "u"],
        "ts": [BASE, BASE, BASE, BASE, BASE - 1],
        "event_id": ["b", "c", "a", "z", "y"],
        "c0": ["B", "C", "A", "Z", "Y"],
    })  # fmt: skip
    rows, ents = rows_from_arrow(fs, table)
    got = compute(fs, rows, entity_codes(ents, pa.array(["u", "w"])), np.array([BASE + 1] * 2))
    assert got["t__first_props_v"].to_pylist() == ["Y", "Z"]
    assert got["t__last_props_v"].to_pylist() == ["C", "Z"]
