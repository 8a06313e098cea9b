"""Durable state of a feature stream: entity states, dedupe memory and bus offsets together.

One SQLite file per consumer group (``<home>/features/stream-<group>.sqlite``).
A checkpoint writes, in one transaction, the entity states changed since the
previous one, the event-id hashes added since (appended per day as sorted runs
of little-endian ``uint64``, merged LSM-style, loaded back as numpy arrays
without a copy), the stream clock and counters,
and the *next offset* of every partition consumed. The runner commits offsets
to the bus only after that transaction is durable, and on restart skips any
message below the checkpointed offsets — so events are counted exactly once
whatever the moment of a crash (kill -9 included).

A feature set whose definition version changed since the checkpoint starts
from empty state (its old state means something else); a warning says so.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from clickloop.errors import DataError
from clickloop.features.metrics import CHECKPOINT
from clickloop.features.state import EntityState
from clickloop.features.stream import FeatureStream, SetStats

log = logging.getLogger(__name__)

# 2: entity states as plain tuples (EntityState.dump); 3: dedupe runs (unsorted hashes);
# 4: dedupe runs are sorted unique hashes (the in-memory deduper's runs, as bytes)
FORMAT: Final = 4

_DDL: Final = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entities (
    fs TEXT NOT NULL, entity TEXT NOT NULL, state BLOB NOT NULL, PRIMARY KEY (fs, entity)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedupe (day INTEGER PRIMARY KEY, ids BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dedupe_runs (
    day INTEGER NOT NULL, run INTEGER NOT NULL, n INTEGER NOT NULL, ids BLOB NOT NULL,
    PRIMARY KEY (day, run)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL, part INTEGER NOT NULL, next INTEGER NOT NULL, PRIMARY KEY (topic, part)
) WITHOUT ROWID;
"""

Offsets = dict[tuple[str, int], int]


@dataclass
class Snapshot:
    """A checkpoint's content as bytes (see :meth:`Checkpoint.snapshot`)."""

    offsets: Offsets
    rows: list[tuple[str, str, bytes]] = field(default_factory=list)
    gone: list[tuple[str, str]] = field(default_factory=list)
    dropped: set[int] = field(default_factory=set)
    pending: dict[int, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # taking it (the stream waits)
    write_seconds: float = 0.0  # writing it (may overlap the stream)


class Checkpoint:
    """The checkpoint file of one stream (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()  # writes may come from the runner's writer thread
        self.con.execute("PRAGMA journal_mode = WAL")
        self.con.execute("PRAGMA synchronous = FULL")  # offsets are committed after this
        self.con.executescript(_DDL)
        got = self._meta("format")
        if got is None:
            self._put("format", FORMAT)
        elif got in (2, 3):
            self._upgrade(got)
        elif got != FORMAT:
            raise DataError(
                f"{self.path}: stream checkpoint format {got}, this version reads {FORMAT}",
                hint="delete the file: the stream then bootstraps again from the lake "
                "(`clickloop features stream --bootstrap auto`)",
            )

    def _meta(self, key: str) -> Any:
        row = self.con.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else orjson.loads(row[0])

    def _put(self, key: str, value: Any) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, orjson.dumps(value)))

    def _upgrade(self, got: int) -> None:
        """Format 2 kept one blob per dedupe day, 3 unsorted runs of it (possibly with a hash
        twice); 4 keeps sorted unique runs. Rewritten in place, one day at a time, in one
        transaction (a crash leaves the old format, upgraded again next time)."""
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            if got == 2:
                con.execute("INSERT OR REPLACE INTO dedupe_runs "
                            "SELECT day, 0, length(ids) / 8, ids FROM dedupe")  # fmt: skip
                con.execute("DELETE FROM dedupe")
            days = [d for (d,) in con.execute("SELECT DISTINCT day FROM dedupe_runs")]
            for day in days:
                blobs = con.execute("SELECT ids FROM dedupe_runs WHERE day = ?", (day,))
                ids = np.unique(np.concatenate([self._hashes(b, day) for (b,) in blobs]))
                con.execute("DELETE FROM dedupe_runs WHERE day = ?", (day,))
                con.execute("INSERT INTO dedupe_runs VALUES (?, 0, ?, ?)",
                            (day, len(ids), _blob(ids)))  # fmt: skip
            self._put("format", FORMAT)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        log.info("%s: stream checkpoint upgraded from format %s to %s (%d dedupe days)",
                 self.path, got, FORMAT, len(days))  # fmt: skip

    def _hashes(self, blob: bytes, day: int, n: int | None = None) -> np.ndarray:
        """A run's hashes (read only, no copy), checked for size."""
        if len(blob) % 8 or (n is not None and len(blob) != 8 * n):
            raise DataError(
                f"{self.path}: dedupe run of day {day} is {len(blob)} bytes, expected "
                f"{'a multiple of 8' if n is None else 8 * n} (a damaged checkpoint)",
                hint="delete the file: the stream then bootstraps again from the lake "
                "(`clickloop features stream --bootstrap auto`)",
            )
        return np.frombuffer(blob, "<u8")

    def _save_dedupe(self, dropped: set[int], pending: dict[int, np.ndarray]) -> None:
        """Append each day's new hashes as a sorted run; merge runs LSM-style (a run is
        merged into the previous one while at least half its size), so every hash is
        rewritten O(log n) times in all instead of every day's bucket at every checkpoint.
        ``pending`` holds only hashes the file does not have yet (the deduper adds a hash
        to a day once), so runs stay disjoint."""
        con = self.con
        for day in dropped:
            con.execute("DELETE FROM dedupe_runs WHERE day = ?", (day,))
        for day, new in pending.items():
            runs = con.execute("SELECT run, n FROM dedupe_runs WHERE day = ? ORDER BY run",
                               (day,)).fetchall()  # fmt: skip
            merge: list[int] = []
            size = len(new)
            while runs and 2 * size >= runs[-1][1]:
                run, n = runs.pop()
                merge.append(run)
                size += n
            parts = [np.sort(new)]
            if merge:
                marks = ",".join("?" * len(merge))
                rows = con.execute(
                    f"SELECT ids, n FROM dedupe_runs WHERE day = ? AND run IN ({marks})",
                    (day, *merge),
                ).fetchall()
                parts += [self._hashes(r[0], day, r[1]) for r in rows]
                con.execute(f"DELETE FROM dedupe_runs WHERE day = ? AND run IN ({marks})",
                            (day, *merge))  # fmt: skip
            ids = np.concatenate(parts) if len(parts) > 1 else parts[0]
            if len(parts) > 1:
                ids.sort(kind="stable")  # timsort: linear on sorted runs
            run = runs[-1][0] + 1 if runs else 0
            con.execute("INSERT INTO dedupe_runs VALUES (?, ?, ?, ?)",
                        (day, run, len(ids), _blob(ids)))  # fmt: skip

    def exists(self) -> bool:
        """Whether a stream state was ever saved here (a bootstrap counts)."""
        return self._meta("max_ts") is not None

    def bootstrap_info(self) -> dict[str, Any] | None:
        """What the last bootstrap from the lake did (None: never bootstrapped)."""
        info = self._meta("bootstrap")
        return info if isinstance(info, dict) else None

    def reset(self) -> None:
        """Forget every saved state and offset (before rebuilding the state elsewhere)."""
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            for table in ("entities", "dedupe", "dedupe_runs", "offsets"):
                con.execute(f"DELETE FROM {table}")  # fixed table names
            con.execute("DELETE FROM meta WHERE k != 'format'")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def offsets(self) -> Offsets:
        rows = self.con.execute("SELECT topic, part, next FROM offsets").fetchall()
        return {(t, p): n for t, p, n in rows}

    def load(self, stream: FeatureStream) -> Offsets:
        """Restore ``stream`` from the file; return the offsets to resume from."""
        versions = self._meta("versions") or {}
        stats = self._meta("stats") or {}
        for fs in stream.sets:
            st = stream.states[fs.name]
            if versions.get(fs.name) not in (None, fs.version):
                log.warning(
                    "feature set %s changed (version %s → %s): its streaming state starts "
                    "empty; run `clickloop features backfill` and `materialize` to fill the "
                    "online store", fs.name, versions[fs.name], fs.version,
                )  # fmt: skip
                self.con.execute("DELETE FROM entities WHERE fs = ?", (fs.name,))
                continue
            cur = self.con.execute("SELECT entity, state FROM entities WHERE fs = ?", (fs.name,))
            for entity, blob in cur:
                st.entities[entity] = EntityState.load(blob)
            if fs.name in stats.get("sets", {}):
                stream.stats.sets[fs.name] = SetStats(**stats["sets"][fs.name])
        stream.part_max = {int(k): int(v) for k, v in (self._meta("part_max") or {}).items()}
        floor = self._meta("floor")
        stream.floor = None if floor is None else int(floor)
        max_ts = self._meta("max_ts")
        if max_ts is not None:
            stream.max_ts = int(max_ts)
            for st in stream.states.values():
                st.clock = stream.clock
                st.rebuild_timers()
        stream.stats.events = int(stats.get("events", 0))
        stream.stats.duplicates = int(stats.get("duplicates", 0))
        stream.stats.before_bootstrap = int(stats.get("before_bootstrap", 0))
        stream.stats.bootstrapped = int(stats.get("bootstrapped", 0))
        dedupe = stream.dedupe
        dedupe.runs.clear()
        cur = self.con.execute("SELECT day, n, ids FROM dedupe_runs ORDER BY day, run")
        for day, n, blob in cur:
            run = self._hashes(blob, day, n)
            if len(run) > 1 and not bool(np.all(run[1:] > run[:-1])):
                raise DataError(
                    f"{self.path}: dedupe run of day {day} is not sorted (a damaged "
                    "checkpoint, or one written by a newer version)",
                    hint="delete the file: the stream then bootstraps again from the lake "
                    "(`clickloop features stream --bootstrap auto`)",
                )
            dedupe.add_run(int(day), run.astype(np.uint64, copy=False))
        for st in stream.states.values():
            st.changed.clear()
            st.dirty.clear()
        stream.dedupe.pending.clear()
        stream.dedupe.dropped.clear()
        return self.offsets()

    def save(self, stream: FeatureStream, offsets: Offsets,
             bootstrap: dict[str, Any] | None = None) -> int:  # fmt: skip
        """Persist what changed and the offsets, atomically; return entity rows written.

        ``bootstrap``: the report of a bootstrap this state comes from (kept in the file).
        """
        return self.write(self.snapshot(stream, offsets, bootstrap))

    def snapshot(self, stream: FeatureStream, offsets: Offsets,
                 bootstrap: dict[str, Any] | None = None) -> Snapshot:  # fmt: skip
        """What :meth:`write` will persist, as bytes: taken between two batches (the state
        must not change meanwhile), written later — possibly on another thread while the
        stream goes on. The change marks are cleared: the next snapshot holds what
        changes after this one (if the write fails, the process must stop and restart
        from the previous checkpoint)."""
        t0 = time.perf_counter()
        snap = Snapshot(offsets=dict(offsets))
        for name, st in stream.states.items():
            entities = st.entities
            for entity in st.changed:
                es = entities.get(entity)
                if es is None:
                    snap.gone.append((name, entity))
                else:
                    snap.rows.append((name, entity, es.dump()))
            st.changed.clear()
        dedupe = stream.dedupe
        snap.dropped = set(dedupe.dropped)
        snap.pending = {d: np.concatenate(c) for d, c in dedupe.pending.items()
                        if c and d in dedupe.runs}  # fmt: skip
        dedupe.pending.clear()
        dedupe.dropped.clear()
        snap.meta = {
            "max_ts": stream.max_ts,
            "floor": stream.floor,
            "part_max": {str(k): v for k, v in stream.part_max.items()},
            "versions": {fs.name: fs.version for fs in stream.sets},
            "stats": stream.stats.to_dict(),
        }
        if bootstrap is not None:
            snap.meta["bootstrap"] = bootstrap
        snap.seconds = time.perf_counter() - t0
        return snap

    def write(self, snap: Snapshot) -> int:
        """Persist a :meth:`snapshot` in one transaction; return entity rows written."""
        t0 = time.perf_counter()
        con = self.con
        with self._lock:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany("INSERT OR REPLACE INTO entities VALUES (?, ?, ?)", snap.rows)
                con.executemany("DELETE FROM entities WHERE fs = ? AND entity = ?", snap.gone)
                self._save_dedupe(snap.dropped, snap.pending)
                con.executemany(
                    "INSERT OR REPLACE INTO offsets VALUES (?, ?, ?)",
                    [(t, p, n) for (t, p), n in snap.offsets.items()],
                )
                for key, value in snap.meta.items():
                    self._put(key, value)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        snap.write_seconds = time.perf_counter() - t0
        CHECKPOINT.observe(snap.seconds + snap.write_seconds)
        return len(snap.rows)

    def close(self) -> None:
        self.con.close()


def _blob(ids: np.ndarray) -> bytes:
    """Hashes as stored: little-endian ``uint64`` whatever the machine."""
    return np.asarray(ids, "<u8").tobytes()
