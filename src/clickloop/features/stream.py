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
    """``event_id`` hashes seen, in buckets by event day, kept for ``horizon``.

    ``pending`` (the hashes added per day) and ``dropped`` (days forgotten) since the
    last checkpoint let the checkpoint write only what is new: a day's bucket grows
    all day long, and rewriting it whole every second would grow with it.
    """

    def __init__(self, horizon: timedelta) -> None:
        self.horizon = horizon // timedelta(microseconds=1)
        self.buckets: dict[int, set[int]] = {}
        self.pending: dict[int, list[np.ndarray]] = {}
        self.dropped: set[int] = set()

    @staticmethod
    def hashes(event_ids: Sequence[str]) -> np.ndarray:
        h = xxhash.xxh64_intdigest
        return np.fromiter((h(e.encode()) for e in event_ids), np.uint64, len(event_ids))

    def remember(self, event_ids: Sequence[str], ts: np.ndarray) -> None:
        """Note ids as seen without checking them (events the lake already holds, deduplicated
        by the lake's own rule), so that their copies on the bus count as duplicates."""
        keys = self.hashes(event_ids)
        days = ts // DAY
        for d in np.unique(days).tolist():
            new = keys[days == d]
            self.buckets.setdefault(d, set()).update(new.tolist())
            self.pending.setdefault(d, []).append(new)

    def seen(self, event_ids: Sequence[str], ts: np.ndarray, now: int) -> np.ndarray:
        """Mark duplicates (also within the batch) and remember the rest."""
        keys = self.hashes(event_ids)
        out = np.ones(len(keys), bool)
        _, first = np.unique(keys, return_index=True)
        out[first] = False  # a repeat inside the batch is a duplicate
        days = ts // DAY
        buckets = self.buckets
        for d in np.unique(days).tolist():
            at = np.nonzero(days == d)[0]
            batch = keys[at].tolist()
            found: set[int] = set()
            for b in (d - 1, d, d + 1):  # a duplicate's time may differ a little
                s = buckets.get(b)
                if s:
                    found |= s.intersection(batch)
            if found:
                out[at[np.isin(keys[at], np.fromiter(found, np.uint64, len(found)))]] = True
            fresh = keys[at[~out[at]]]
            if len(fresh):
                buckets.setdefault(d, set()).update(fresh.tolist())
                self.pending.setdefault(d, []).append(fresh)
        oldest = (now - self.horizon) // DAY - 1
        for b in [b for b in buckets if b < oldest]:
            del buckets[b]
            self.pending.pop(b, None)
            self.dropped.add(b)
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
