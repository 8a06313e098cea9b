"""The streaming engine: the same feature definitions, maintained event by event.

:class:`FeatureStream` is the engine without any I/O: feed it canonical events
in arrival order (:meth:`FeatureStream.apply`), read values as of its clock, and
collect the rows that changed (:meth:`FeatureStream.emit`). Its clock is event
time: the newest event time seen plus one microsecond, so values cover every
event consumed — exactly what the batch engine computes as of that time.

Rules, per feature set:

* **Duplicates** (an ``event_id`` seen before within ``ingest.dedupe_horizon``)
  are skipped, as the lake skips them.
* **Late events** — older than the newest event seen so far — are applied to
  their tiles while they are within the set's ``allowed_lateness``; older ones
  are *too late*: counted (``too_late``), reported, and left to the next batch
  backfill and materialisation, which see every event in the lake.
* Windows decay as the clock moves: an entity whose window lost a tile is
  re-emitted even without new events.

:class:`clickloop.features.runner.StreamRunner` connects it to the bus, the
online store and a checkpoint.

>>> stream = FeatureStream(load_sets(project))                       # doctest: +SKIP
>>> stream.apply(events)
>>> stream.values("user_activity", "u42")["user_activity__count_1h"]
3
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from clickloop.events.schema import UTC_US
from clickloop.features.definition import FeatureSet
from clickloop.features.prepare import UrlCache, prepare
from clickloop.features.source import Knowledge, needs_urls
from clickloop.features.state import SetState

log = logging.getLogger(__name__)

DAY: Final = 86_400_000_000
NEVER: Final = -(2**62)


class Deduper:
    """``event_id`` hashes seen, by event day, kept for ``horizon``: compact and vectorised.

    The rule: an event is a duplicate when its ``event_id`` repeats one earlier in the
    same batch (whatever the times), or when the id's 64-bit hash (xxh64 of the UTF-8
    bytes) was remembered in its event day's bucket or a neighbouring day's (a duplicate's
    time may differ a little). Days older than the day before ``now - horizon`` are
    forgotten whole.

    Each day holds its hashes as a few sorted runs of unique ``uint64`` (8 bytes per id,
    against about 80 in a Python set): a batch's new hashes become a run, merged into the
    previous one while at least half its size (LSM-style), so a day of *n* ids has
    O(log n) runs and every hash is re-sorted O(log n) times in all. A lookup is one
    :func:`numpy.searchsorted` per run over the batch's sorted hashes.

    ``pending`` (the hashes added per day) and ``dropped`` (days forgotten) since the
    last checkpoint let the checkpoint write only what is new: a day's bucket grows
    all day long, and rewriting it whole every second would grow with it.

    >>> import numpy as np
    >>> from datetime import timedelta
    >>> d = Deduper(timedelta(days=7))
    >>> d.seen(["a", "b", "a"], np.array([0, 0, 5]), now=5).tolist()
    [False, False, True]
    >>> d.seen(["b", "c"], np.array([DAY + 1, DAY + 1]), now=DAY + 1).tolist()  # day 0 is near
    [True, False]
    >>> len(d), d.days()
    (3, [0, 1])
    """

    def __init__(self, horizon: timedelta) -> None:
        self.horizon = horizon // timedelta(microseconds=1)
        self.runs: dict[int, list[np.ndarray]] = {}  # day → sorted runs, disjoint, unique
        self.pending: dict[int, list[np.ndarray]] = {}
        self.dropped: set[int] = set()

    def __len__(self) -> int:
        return sum(len(r) for runs in self.runs.values() for r in runs)

    @property
    def nbytes(self) -> int:
        """Bytes held by the hashes (the memory this dedupe costs, ``pending`` aside)."""
        return sum(r.nbytes for runs in self.runs.values() for r in runs)

    def days(self) -> list[int]:
        """The days (event time // one day) with remembered ids, ascending."""
        return sorted(self.runs)

    def contents(self) -> dict[int, np.ndarray]:
        """Each day's hashes, sorted, as one array (shared with the deduper: read only)."""
        return {d: _merged(self.runs[d]) for d in self.days()}

    @staticmethod
    def hashes(event_ids: Sequence[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """xxh64 of each id's UTF-8 bytes (checkpoints since format 2 hold these)."""
        if isinstance(event_ids, (pa.Array, pa.ChunkedArray)):
            event_ids = event_ids.to_pylist()
        h = xxhash.xxh64_intdigest
        return np.fromiter((h(e.encode()) for e in event_ids), np.uint64, len(event_ids))

    def add_run(self, day: int, run: np.ndarray) -> None:
        """Add sorted unique hashes, none of them already in ``day`` (not to ``pending``)."""
        if len(run) == 0:
            return
        runs = self.runs.setdefault(day, [])
        runs.append(run)
        while len(runs) > 1 and 2 * len(runs[-1]) >= len(runs[-2]):
            last = runs.pop()
            runs[-1] = _merged([runs[-1], last])

    def _contains(self, days: Sequence[int], q: np.ndarray) -> np.ndarray:
        """Whether each of the sorted hashes ``q`` is in one of these days."""
        hit = np.zeros(len(q), bool)
        for b in days:
            for run in self.runs.get(b, ()):
                pos = np.searchsorted(run, q)
                np.minimum(pos, len(run) - 1, out=pos)
                hit |= run[pos] == q
        return hit

    def remember(self, event_ids: Sequence[str] | pa.Array, ts: np.ndarray) -> None:
        """Note ids as seen without checking them (events the lake already holds, deduplicated
        by the lake's own rule), so that their copies on the bus count as duplicates."""
        keys = self.hashes(event_ids)
        days = ts // DAY
        for d in np.unique(days).tolist():
            new = np.unique(keys[days == d])
            new = new[~self._contains((d,), new)]
            if len(new):
                self.add_run(d, new)
                self.pending.setdefault(d, []).append(new)

    def seen(self, event_ids: Sequence[str] | pa.Array, ts: np.ndarray, now: int) -> np.ndarray:
        """Mark duplicates (also within the batch) and remember the rest."""
        keys = self.hashes(event_ids)
        out = np.ones(len(keys), bool)
        if len(keys):
            order = np.argsort(keys, kind="stable")  # equal hashes in arrival order
            sk = keys[order]
            first = np.empty(len(sk), bool)
            first[0] = True
            np.not_equal(sk[1:], sk[:-1], out=first[1:])
            cand = order[first]  # each hash's first arrival (a repeat in the batch is a
            out[cand] = False  # duplicate), in ascending hash order
            days = ts[cand] // DAY
            lo, hi = int(days.min()), int(days.max())
            for d in [lo] if lo == hi else np.unique(days).tolist():
                at = cand if lo == hi else cand[days == d]
                q = keys[at]  # sorted
                hit = self._contains((d - 1, d, d + 1), q)
                out[at[hit]] = True
                fresh = q[~hit]
                if len(fresh):
                    self.add_run(d, fresh)
                    self.pending.setdefault(d, []).append(fresh)
        oldest = (now - self.horizon) // DAY - 1
        for b in [b for b in self.runs if b < oldest]:
            del self.runs[b]
            self.pending.pop(b, None)
            self.dropped.add(b)
        return out


def _merged(runs: Sequence[np.ndarray]) -> np.ndarray:
    """One sorted array from sorted runs (timsort: linear on a few sorted runs)."""
    if len(runs) == 1:
        return runs[0]
    if not runs:
        return np.zeros(0, np.uint64)
    out = np.concatenate(runs)
    out.sort(kind="stable")
    return out


@dataclass
class SetStats:
    applied: int = 0
    too_late: int = 0
    filtered: int = 0
    rows_emitted: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class StreamStats:
    events: int = 0
    duplicates: int = 0
    before_bootstrap: int = 0  # bus events older than the bootstrap's dedupe memory
    bootstrapped: int = 0  # lake events the state was seeded with
    sets: dict[str, SetStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"events": self.events, "duplicates": self.duplicates,
                "before_bootstrap": self.before_bootstrap, "bootstrapped": self.bootstrapped,
                "sets": {k: v.to_dict() for k, v in self.sets.items()}}  # fmt: skip


class FeatureStream:
    """Feature sets maintained incrementally over a stream of canonical events."""

    def __init__(
        self,
        sets: Sequence[FeatureSet],
        *,
        knowledge: Knowledge | None = None,
        dedupe_horizon: timedelta = timedelta(days=7),
    ) -> None:
        self.sets = list(sets)
        self.states = {fs.name: SetState(fs) for fs in self.sets}
        self.max_ts = NEVER
        self.part_max: dict[int, int] = {}  # newest event time per bus partition
        self.dedupe = Deduper(dedupe_horizon)
        # after a bootstrap from the lake: events older than this (µs) are left to the lake
        # (the dedupe memory cannot tell whether the lake already holds them)
        self.floor: int | None = None
        self.urls: UrlCache | None = None
        if any(needs_urls(fs) for fs in self.sets):
            if knowledge is None:
                from clickloop.errors import ConfigError

                names = [fs.name for fs in self.sets if needs_urls(fs)]
                raise ConfigError(
                    f"feature sets {', '.join(names)} read URL fields but no URL knowledge "
                    "is available",
                    hint="run `clickloop urls learn` (or declare urls.rules in clickloop.yaml)",
                )
            self.urls = UrlCache(knowledge)
        self.stats = StreamStats(sets={fs.name: SetStats() for fs in self.sets})

    @property
    def clock(self) -> int:
        """As-of time of the values (µs): newest event time + 1."""
        return self.max_ts + 1

    def apply(self, events: pa.Table, partitions: np.ndarray | None = None) -> int:
        """Apply canonical events in arrival order; return how many were new (not duplicates).

        ``partitions``: each event's bus partition. Order holds only within a
        partition, so lateness is judged against the *watermark* — the oldest of the
        partitions' newest event times (a partition catching up on a backlog is not
        late). Without partitions the stream is one partition.
        """
        n = events.num_rows
        if n == 0:
            return 0
        part = np.zeros(n, np.int64) if partitions is None else np.asarray(partitions, np.int64)
        ts = np.asarray(pc.cast(pc.cast(events.column("ts"), UTC_US), pa.int64()).to_numpy(),
                        np.int64)  # fmt: skip
        ids = events.column("event_id").to_pylist()
        dup = self.dedupe.seen(ids, ts, max(self.max_ts, int(ts.max())))
        self.stats.events += n
        self.stats.duplicates += int(dup.sum())
        if self.floor is not None:
            old = ~dup & (ts < self.floor)
            if old.any():
                self.stats.before_bootstrap += int(old.sum())
                dup |= old
        if dup.any():
            keep = ~dup
            events = events.filter(pa.array(keep))
            ts, part = ts[keep], part[keep]
        if events.num_rows == 0:
            return 0
        # the clock: the newest event time so far, including each event
        upto = np.maximum.accumulate(np.concatenate([[self.max_ts], ts]))[1:]
        before = self._watermarks(ts, part)
        urls = self.urls.lookup(events.column("url")) if self.urls is not None else None
        position = pa.array(np.arange(events.num_rows))
        for fs in self.sets:
            self._apply_set(fs, events.append_column("_pos", position), urls, before, upto)
        self.max_ts = int(upto[-1])
        for st in self.states.values():
            st.advance(self.clock)
        return events.num_rows

    def seed(
        self,
        events: pa.Table,
        *,
        sets: Mapping[str, int | None] | None = None,
        remember_from: int | None = None,
    ) -> int:
        """Apply events the lake already holds as of :attr:`clock` (a bootstrap).

        Set the clock first (:meth:`advance`) past every event fed here: events are
        neither deduplicated (the lake did that) nor judged late, and no watermark
        moves. Ids of events at or after ``remember_from`` (µs) go into the dedupe
        memory so their copies on the bus count once. ``sets``: only these sets, each
        with the oldest event time it needs (None: all) — an event older than a set's
        longest window is useless to it. Returns rows read.
        """
        n = events.num_rows
        if n == 0:
            return 0
        ts = np.asarray(pc.cast(pc.cast(events.column("ts"), UTC_US), pa.int64()).to_numpy(),
                        np.int64)  # fmt: skip
        if int(ts.max()) >= self.clock:
            raise ValueError("seed: advance the clock past every event first")
        if remember_from is not None:
            recent = ts >= remember_from
            if recent.any():
                ids = events.column("event_id").filter(pa.array(recent)).to_pylist()
                self.dedupe.remember(ids, ts[recent])
        since = dict.fromkeys(self.states) if sets is None else dict(sets)
        urls = self.urls.lookup(events.column("url")) if self.urls is not None else None
        for fs in self.sets:
            if fs.name not in since:
                continue
            rows = prepare(fs, events, urls)
            self.stats.sets[fs.name].filtered += n - rows.num_rows
            lo = since[fs.name]
            if lo is not None and rows.num_rows:
                rows = rows.filter(pc.greater_equal(rows.column("ts"), lo))
            if rows.num_rows == 0:
                continue
            self.states[fs.name].add_batch(
                rows.column("entity").combine_chunks(),
                np.asarray(rows.column("ts").to_numpy(), np.int64),
                rows.column("event_id").combine_chunks(),
                [rows.column(f"c{i}").combine_chunks() for i in range(len(fs.inputs))],
                self.clock,
            )
            self.stats.sets[fs.name].applied += rows.num_rows
        self.stats.bootstrapped += n
        return n

    def _watermarks(self, ts: np.ndarray, part: np.ndarray) -> np.ndarray:
        """Per event, the watermark lateness is judged by: the newest time its own partition
        had reached before it, capped by the other partitions' newest times at the start of
        the batch."""
        out = np.empty(len(ts), np.int64)
        start = dict(self.part_max)
        for p in np.unique(part).tolist():
            at = np.nonzero(part == p)[0]
            own = np.maximum.accumulate(np.concatenate([[start.get(p, NEVER)], ts[at]]))
            others = [m for q, m in start.items() if q != p]
            cap = min(others) if others else None
            out[at] = own[:-1] if cap is None else np.minimum(own[:-1], cap)
            self.part_max[p] = int(own[-1])
        return out

    def _apply_set(self, fs: FeatureSet, events: pa.Table, urls: pa.Table | None,
                   before: np.ndarray, upto: np.ndarray) -> None:  # fmt: skip
        st = self.states[fs.name]
        stats = self.stats.sets[fs.name]
        rows = prepare(fs, events, urls, carry=["_pos"])
        stats.filtered += events.num_rows - rows.num_rows
        if rows.num_rows == 0:
            return
        pos = np.asarray(rows.column("_pos").to_numpy(), np.int64)
        lateness = fs.allowed_lateness // timedelta(microseconds=1)
        row_ts = np.asarray(rows.column("ts").to_numpy(), np.int64)
        late = row_ts < before[pos] - lateness
        stats.too_late += int(late.sum())
        if late.any():
            rows = rows.filter(pa.array(~late))
            row_ts = row_ts[~late]
        # as if one by one: each event with the clock at its arrival; a tile leaving a window
        # before the batch's end would have been added and subtracted again
        st.add_batch(
            rows.column("entity").combine_chunks(),
            row_ts,
            rows.column("event_id").combine_chunks(),
            [rows.column(f"c{i}").combine_chunks() for i in range(len(fs.inputs))],
            int(upto[-1]) + 1,
        )
        stats.applied += rows.num_rows

    def advance(self, as_of: int) -> None:
        """Move every set's clock to ``as_of`` (µs) without events (windows decay)."""
        self.max_ts = max(self.max_ts, as_of - 1)
        for st in self.states.values():
            st.advance(self.clock)

    def values(self, feature_set: str, entity: str) -> dict[str, Any]:
        """One entity's values as of :attr:`clock`."""
        return self.states[feature_set].values(entity)

    def emit(self, feature_set: str) -> pa.Table:
        """Rows (``entity``, ``_event_ts``, features) of entities changed since the last emit."""
        st = self.states[feature_set]
        fs = st.fs
        entities = sorted(st.dirty)
        st.dirty.clear()
        cols = st.columns(entities)
        self.stats.sets[feature_set].rows_emitted += len(entities)
        n = len(entities)
        table = {
            "entity": pa.array(entities, pa.string()),
            "_event_ts": pa.array(np.full(n, self.clock, np.int64), pa.int64()).cast(UTC_US),
        }
        for f in fs.features:
            table[f.name] = pa.array(cols[f.name], f.dtype)
        return pa.table(table)
