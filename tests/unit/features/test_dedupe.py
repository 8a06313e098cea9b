"""The stream's dedupe memory: the set-based rule it replaces, in 8 bytes per id."""

from __future__ import annotations

import tracemalloc
from datetime import timedelta

import numpy as np
import pyarrow as pa
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from clickloop.features.stream import DAY, Deduper


class SetDeduper:
    """The previous implementation (Python sets per day), the reference for the rule."""

    def __init__(self, horizon: timedelta) -> None:
        self.horizon = horizon // timedelta(microseconds=1)
        self.buckets: dict[int, set[int]] = {}

    @staticmethod
    def hashes(ids: list[str]) -> list[int]:
        return [xxhash.xxh64_intdigest(e.encode()) for e in ids]

    def remember(self, ids: list[str], ts: list[int]) -> None:
        for k, t in zip(self.hashes(ids), ts, strict=True):
            self.buckets.setdefault(t // DAY, set()).add(k)

    def seen(self, ids: list[str], ts: list[int], now: int) -> list[bool]:
        keys = self.hashes(ids)
        out, first = [], set()
        for k in keys:
            out.append(k in first)
            first.add(k)
        for i, (k, t) in enumerate(zip(keys, ts, strict=True)):
            if out[i]:
                continue
            d = t // DAY
            if any(k in self.buckets.get(b, ()) for b in (d - 1, d, d + 1)):
                out[i] = True
        for i, (k, t) in enumerate(zip(keys, ts, strict=True)):
            if not out[i]:
                self.buckets.setdefault(t // DAY, set()).add(k)
        oldest = (now - self.horizon) // DAY - 1
        for b in [b for b in self.buckets if b < oldest]:
            del self.buckets[b]
        return out


def memory(d: Deduper) -> dict[int, set[int]]:
    return {day: set(h.tolist()) for day, h in d.contents().items()}


ids = st.sampled_from([f"id{i}" for i in range(40)] + ["é", "", "x" * 70])
step = st.tuples(
    st.sampled_from(["seen", "seen", "seen", "remember"]),
    st.lists(st.tuples(ids, st.integers(-2 * DAY, 12 * DAY)), max_size=30),
    st.integers(-DAY, 3 * DAY),  # how far the clock is ahead of the batch's newest event
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=25), st.sampled_from([timedelta(days=7), timedelta(hours=1)]))
def test_same_decisions_as_the_set_based_rule(steps, horizon) -> None:
    """Repeats inside a batch, neighbouring days, late events, expiry of whole days: every
    decision and every remembered hash equal the set-based implementation's."""
    new, ref = Deduper(horizon), SetDeduper(horizon)
    for kind, batch, ahead in steps:
        names = [i for i, _ in batch]
        ts = [t for _, t in batch]
        if kind == "remember":
            new.remember(pa.array(names, pa.string()), np.array(ts, np.int64))
            ref.remember(names, ts)
            continue
        now = max(ts, default=0) + ahead
        got = new.seen(names, np.array(ts, np.int64), now)
        assert got.tolist() == ref.seen(names, ts, now)
        assert memory(new) == {d: b for d, b in ref.buckets.items() if b}
        assert len(new) == sum(len(b) for b in ref.buckets.values())
        for runs in new.runs.values():  # sorted, unique, disjoint runs
            flat = np.concatenate(runs)
            assert len(np.unique(flat)) == len(flat)
            assert all(bool(np.all(r[1:] > r[:-1])) for r in runs)


def test_pending_and_dropped_say_what_changed() -> None:
    d = Deduper(timedelta(days=1))
    d.seen(["a", "b"], np.array([0, 10]), now=10)
    d.remember(["b", "c"], np.array([10, 10]))  # b is known: only c is new
    assert sorted(np.concatenate(d.pending[0]).tolist()) == sorted(
        Deduper.hashes(["a", "b", "c"]).tolist()
    )
    d.pending.clear()
    d.seen(["z"], np.array([5 * DAY]), now=5 * DAY)  # day 0 is past the horizon
    assert d.dropped == {0} and d.days() == [5] and list(d.pending) == [5]


def test_a_big_day_keeps_few_runs_and_finds_every_repeat() -> None:
    rng = np.random.default_rng(3)
    names = [f"evt-{x:x}" for x in rng.integers(0, 2**62, 200_000)]
    d = Deduper(timedelta(days=7))
    for s in range(0, len(names), 1_000):
        d.seen(names[s : s + 1_000], np.full(1_000, 7), now=7)
    assert len(d) == len(set(names)) and len(d.runs[0]) <= 18  # log2(200) ≈ 8, two per level
    again = d.seen(names[::7], np.full(len(names[::7]), DAY + 7), now=DAY + 7)  # the next day
    assert again.all()


def test_memory_is_about_8_bytes_per_id() -> None:
    """Python sets cost about 80 bytes per id; the sorted runs 8 (plus merges' transients)."""
    rng = np.random.default_rng(4)
    n = 300_000
    keys = [f"{x:032x}" for x in rng.integers(0, 2**62, n)]
    ts = np.sort(rng.integers(0, 7 * DAY, n))
    tracemalloc.start()
    try:
        d = Deduper(timedelta(days=7))
        for s in range(0, n, 10_000):
            d.seen(keys[s : s + 10_000], ts[s : s + 10_000], int(ts[min(s + 10_000, n) - 1]))
        d.pending.clear()  # a checkpoint takes them
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(d) == n and d.nbytes == 8 * n
    assert held < 12 * n, f"{held / n:.1f} bytes per id"
