"""The dedupe index against brute force (hypothesis): same answers, whatever the data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickloop.errors import DataError
from clickloop.lake.idindex import (
    IdIndex,
    decode_sidecar,
    encode_sidecar,
    first_occurrences,
    id_hash,
)

HORIZON = 100

pairs = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 1000)), max_size=60)


@given(st.lists(st.text(max_size=40), min_size=1, max_size=50))
def test_equal_ids_hash_equal_and_distinct_ids_differ(ids):
    h = id_hash(pa.array(ids, pa.string()))
    for i, a in enumerate(ids):
        for j, b in enumerate(ids):
            assert (h[i] == h[j]) == (a == b)
        # an id's hash never depends on the other ids hashed with it
        assert id_hash(pa.array([a], pa.string()))[0] == h[i]


def test_the_hash_is_stable_across_versions_and_machines():
    # a change here would make every existing lake's dedupe sidecars wrong
    got = id_hash(pa.array(["", "a", "e1", "7c2af6c4-51b9-9618-6d05-1b4fc8bf7a68"]))
    again = id_hash(pa.array(["", "a", "e1", "7c2af6c4-51b9-9618-6d05-1b4fc8bf7a68"]))
    assert got.tolist() == again.tolist()
    assert len(set(got.tolist())) == 4
    sliced = id_hash(pa.array(["x", "a", "e1"]).slice(1))
    assert sliced.tolist() == got[1:3].tolist()


@given(pairs, pairs, st.lists(pairs, max_size=4))
def test_contains_answers_like_brute_force(stored, queries, more_runs):
    idx = IdIndex()
    everything = list(stored)
    idx.add(np.array([h for h, _ in stored], np.uint64), np.array([t for _, t in stored]))
    for run in more_runs:  # several runs, merged LSM-style
        idx.add(np.array([h for h, _ in run], np.uint64), np.array([t for _, t in run]))
        everything += run
    qh = np.array([h for h, _ in queries], np.uint64)
    qt = np.array([t for _, t in queries], np.int64)
    got = idx.contains(qh, qt, HORIZON)
    want = [any(h == sh and abs(t - st_) <= HORIZON for sh, st_ in everything) for h, t in queries]
    assert got.tolist() == want
    assert len(idx) == len(everything)


@given(pairs)
def test_first_occurrences_keeps_the_first_of_each_repeat(rows):
    h = np.array([a for a, _ in rows], np.uint64)
    t = np.array([b for _, b in rows], np.int64)
    got = first_occurrences(h, t, HORIZON)
    kept: list[tuple[int, int]] = []
    want = []
    for a, b in rows:
        repeat = any(a == ka and abs(b - kb) <= HORIZON for ka, kb in kept)
        want.append(not repeat)
        if not repeat:
            kept.append((a, b))
    assert got.tolist() == want


def test_trim_forgets_only_old_pairs():
    idx = IdIndex()
    idx.add(np.array([1, 2, 3], np.uint64), np.array([10, 500, 1000]))
    assert idx.trim(400) == 1
    assert idx.contains(np.array([1, 2], np.uint64), np.array([10, 500]), 0).tolist() == [
        False,
        True,
    ]


def test_sidecars_round_trip_and_refuse_torn_files():
    h = np.array([5, 1, 3], np.uint64)
    t = np.array([50, 10, 30], np.int64)
    back_h, back_t = decode_sidecar(encode_sidecar(h, t))
    assert back_h.tolist() == [1, 3, 5] and back_t.tolist() == [10, 30, 50]
    with pytest.raises(DataError, match="torn"):
        decode_sidecar(encode_sidecar(h, t)[:-3])
