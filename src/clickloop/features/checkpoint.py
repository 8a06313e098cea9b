"""Durable state of a feature stream: entity states, dedupe memory and bus offsets together.

One SQLite file per consumer group (``<home>/features/stream-<group>.sqlite``).
A checkpoint writes, in one transaction, the entity states changed since the
previous one, the dedupe buckets that changed, the stream clock and counters,
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
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from clickloop.errors import DataError
from clickloop.features.metrics import CHECKPOINT
from clickloop.features.state import EntityState
from clickloop.features.stream import FeatureStream, SetStats

log = logging.getLogger(__name__)

FORMAT: Final = 2  # 2: entity states as plain tuples (EntityState.dump)
_DDL: Final = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entities (
    fs TEXT NOT NULL, entity TEXT NOT NULL, state BLOB NOT NULL, PRIMARY KEY (fs, entity)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedupe (day INTEGER PRIMARY KEY, ids BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL, part INTEGER NOT NULL, next INTEGER NOT NULL, PRIMARY KEY (topic, part)
) WITHOUT ROWID;
"""

Offsets = dict[tuple[str, int], int]


class Checkpoint:
    """The checkpoint file of one stream (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.con.execute("PRAGMA journal_mode = WAL")
        self.con.execute("PRAGMA synchronous = FULL")  # offsets are committed after this
        self.con.executescript(_DDL)
        got = self._meta("format")
        if got is None:
            self._put("format", FORMAT)
        elif got != FORMAT:
            raise DataError(
                f"{self.path}: stream checkpoint format {got}, this version reads {FORMAT}",
                hint="delete the file to restart the stream from the group's offsets",
            )

    def _meta(self, key: str) -> Any:
        row = self.con.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else orjson.loads(row[0])

    def _put(self, key: str, value: Any) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, orjson.dumps(value)))

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
            for table in ("entities", "dedupe", "offsets"):
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
        for day, ids in self.con.execute("SELECT day, ids FROM dedupe"):
            stream.dedupe.buckets[int(day)] = set(np.frombuffer(ids, np.uint64).tolist())
        for st in stream.states.values():
            st.changed.clear()
            st.dirty.clear()
        stream.dedupe.changed.clear()
        return self.offsets()

    def save(self, stream: FeatureStream, offsets: Offsets,
             bootstrap: dict[str, Any] | None = None) -> int:  # fmt: skip
        """Persist what changed and the offsets, atomically; return entity rows written.

        ``bootstrap``: the report of a bootstrap this state comes from (kept in the file).
        """
        t0 = time.perf_counter()
        con = self.con
        written = 0
        con.execute("BEGIN IMMEDIATE")
        try:
            for name, st in stream.states.items():
                rows = []
                gone = []
                for entity in st.changed:
                    es = st.entities.get(entity)
                    if es is None:
                        gone.append((name, entity))
                    else:
                        rows.append((name, entity, es.dump()))
                con.executemany("INSERT OR REPLACE INTO entities VALUES (?, ?, ?)", rows)
                con.executemany("DELETE FROM entities WHERE fs = ? AND entity = ?", gone)
                written += len(rows)
            for day in stream.dedupe.changed:
                ids = stream.dedupe.buckets.get(day)
                if ids is None:
                    con.execute("DELETE FROM dedupe WHERE day = ?", (day,))
                else:
                    blob = np.fromiter(ids, np.uint64, len(ids)).tobytes()
                    con.execute("INSERT OR REPLACE INTO dedupe VALUES (?, ?)", (day, blob))
            con.executemany(
                "INSERT OR REPLACE INTO offsets VALUES (?, ?, ?)",
                [(t, p, n) for (t, p), n in offsets.items()],
            )
            self._put("max_ts", stream.max_ts)
            self._put("floor", stream.floor)
            if bootstrap is not None:
                self._put("bootstrap", bootstrap)
            self._put("part_max", {str(k): v for k, v in stream.part_max.items()})
            self._put("versions", {fs.name: fs.version for fs in stream.sets})
            self._put("stats", stream.stats.to_dict())
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        for st in stream.states.values():
            st.changed.clear()
        stream.dedupe.changed.clear()
        CHECKPOINT.observe(time.perf_counter() - t0)
        return written

    def close(self) -> None:
        self.con.close()
