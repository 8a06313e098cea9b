"""Writing to the lake: transactions that commit events, quarantine and checkpoints at once.

A :class:`LakeWriter` is one process's handle for writing (it owns a writer id,
the in-memory dedupe index, and on local disks a lock that tells recovery it is
alive). Each :class:`Transaction` stages Parquet files aside — one per event
date for events, one per arrival date for quarantine — plus a dedupe sidecar
per events file, then publishes everything with one commit. Until that commit
exists nothing of the transaction is visible; after it, all of it is.

Every record given to a transaction ends in exactly one pile, counted in the
commit: accepted (written), duplicate (an ``event_id`` the lake, or this
transaction, already accepted within the horizon — dropped), or quarantined.

>>> w = lake.writer()                                         # doctest: +SKIP
>>> with w.begin(source="files", operation="ingest-batch") as txn: # doctest: +SKIP
...     txn.add_events(events)           # canonical events (EVENT_SCHEMA)
...     txn.add_rejects(rejects)         # QUARANTINE_SCHEMA rows
...     txn.checkpoint("file:ab12…", {"offset": 123, "records": 10, "done": True})
...     result = txn.commit()
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clickloop.events.schema import EVENT_SCHEMA
from clickloop.lake.idindex import (
    IdIndex,
    decode_sidecar,
    encode_sidecar,
    id_hash,
    repeats,
)
from clickloop.lake.log import Commit, CommitLog, FileEntry, SourceCounts
from clickloop.lake.quarantine import QUARANTINE_SCHEMA

if TYPE_CHECKING:
    from clickloop.lake.lake import Lake

log = logging.getLogger(__name__)

DAY_US: Final = 86_400_000_000
EVENTS_DIR: Final = "raw/events"
QUARANTINE_DIR: Final = "quarantine"
INDEX_DIR: Final = "_index/events"
WRITERS_DIR: Final = "_writers"
ROW_GROUP_ROWS: Final = 128 * 1024
WRITER_ID: Final = re.compile(r"part-([0-9a-f]{12})-")


def day_of(us: int) -> int:
    """Days since the epoch of a UTC time in microseconds."""
    return us // DAY_US


def day_name(day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=day)).isoformat()


def day_number(name: str) -> int:
    return (date.fromisoformat(name) - date(1970, 1, 1)).days


@dataclass
class CommitResult:
    """What one commit did (``version`` is ``None`` when there was nothing to commit)."""

    version: int | None
    counts: dict[str, SourceCounts] = field(default_factory=dict)
    files: list[FileEntry] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    retries: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "counts": {k: v.to_json() for k, v in self.counts.items()},
            "files": len(self.files),
            "bytes": self.bytes,
            "seconds": round(self.seconds, 4),
        }


class _Staged:
    """One Parquet file being written aside; rows buffered into row groups."""

    def __init__(self, lake: Lake, rel: str, schema: pa.Schema) -> None:
        self.rel = rel
        self._stack = contextlib.ExitStack()
        self._file: IO[bytes] = self._stack.enter_context(lake.storage.writer(rel))
        compression = None if lake.compression == "none" else lake.compression
        self._writer = pq.ParquetWriter(
            self._file, schema, compression=compression, **_WRITE_OPTIONS[schema.names[0]]
        )
        self._buf: list[pa.Table] = []
        self._buffered = 0
        self.rows = 0
        self.size = 0
        self.ts_min = math.inf
        self.ts_max = -math.inf
        self.received_max = -math.inf
        self.hashes: list[np.ndarray] = []
        self.ts: list[np.ndarray] = []

    def add(self, table: pa.Table, ts_us: np.ndarray, received_us: np.ndarray) -> None:
        self._buf.append(table)
        self._buffered += table.num_rows
        self.rows += table.num_rows
        if len(ts_us):
            self.ts_min = min(self.ts_min, int(ts_us.min()))
            self.ts_max = max(self.ts_max, int(ts_us.max()))
            self.received_max = max(self.received_max, int(received_us.max()))
        if self._buffered >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._writer.write_table(pa.concat_tables(self._buf), row_group_size=ROW_GROUP_ROWS)
            self._buf, self._buffered = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self.size = self._file.tell()
        self._stack.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(_AbortedError):
            self._stack.__exit__(_AbortedError, _AbortedError(), None)


# Dictionary-encode only columns with few distinct values (unique ids and the props map
# gain nothing and halve the write speed); statistics where readers prune on them.
_WRITE_OPTIONS: Final[dict[str, dict[str, Any]]] = {
    "event_id": {
        "use_dictionary": ["type", "user_id", "session_id", "url", "referrer"],
        "write_statistics": ["ts", "received_at", "type", "user_id", "session_id"],
    },
    "payload": {
        "use_dictionary": ["reason", "source"],
        "write_statistics": ["reason", "source", "received_at"],
    },
}


class _AbortedError(Exception):
    pass


class Transaction:
    """Staged files, counts and checkpoints that become visible together (see module doc)."""

    def __init__(self, writer: LakeWriter, source: str, operation: str) -> None:
        self.writer = writer
        self.lake = writer.lake
        self.source = source
        self.operation = operation
        self.counts = SourceCounts()
        self.checkpoints: dict[str, Any] = {}
        self.expect: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self._pending = IdIndex()
        self._events: dict[int, _Staged] = {}
        self._quarantine: dict[int, _Staged] = {}
        self._done = False

    # -- staging -------------------------------------------------------------------------

    def add_events(self, events: pa.Table, hashes: np.ndarray | None = None) -> np.ndarray:
        """Stage canonical events; return the mask of rows accepted (the rest are duplicates).

        ``hashes`` are the rows' :func:`~clickloop.lake.idindex.id_hash` values when the
        caller computed them already (e.g. on a worker thread).
        """
        n = events.num_rows
        if n == 0:
            return np.zeros(0, bool)
        if events.schema != EVENT_SCHEMA:
            events = events.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
        if hashes is None:
            hashes = id_hash(events.column("event_id"))
        ts = _micros(events.column("ts"))
        horizon = self.writer.horizon_us
        self.writer.ensure(int(ts.min()), int(ts.max()))
        order = np.argsort(hashes, kind="stable")  # one sort serves every lookup below
        dup = self.writer.index.contains(hashes, ts, horizon, order)
        dup |= self._pending.contains(hashes, ts, horizon, order)
        dup[repeats(hashes, ts, horizon, order[~dup[order]])] = True
        keep = ~dup
        accepted = int(keep.sum())
        self.counts.received += n
        self.counts.accepted += accepted
        self.counts.duplicates += n - accepted
        if accepted == 0:
            return keep
        kept_sorted = order[keep[order]]
        self._pending.add(hashes[kept_sorted], ts[kept_sorted], presorted=True)
        received = _micros(events.column("received_at"))
        days = ts // DAY_US
        kept = None if accepted == n else np.flatnonzero(keep)
        for day, group in _groups(days if kept is None else days[kept]):
            # rows of the input: one take per day at most (none for a batch of one day
            # without duplicates), not one to drop the duplicates and more per day
            rows = group if kept is None else (kept if group is None else kept[group])
            staged = self._events.get(day)
            if staged is None:
                rel = self.writer.new_name(f"{EVENTS_DIR}/dt={day_name(day)}")
                staged = self._events[day] = _Staged(self.lake, rel, EVENT_SCHEMA)
            part = events if rows is None else events.take(pa.array(rows))
            t = ts if rows is None else ts[rows]
            staged.add(part, t, received if rows is None else received[rows])
            # the sidecar lists ids sorted by hash: this part goes in as a sorted run (the
            # sort above says how), so closing the file merges runs instead of sorting
            run = kept_sorted if group is None else kept_sorted[days[kept_sorted] == day]
            staged.hashes.append(hashes[run])
            staged.ts.append(ts[run])
        return keep

    def add_rejects(self, rejects: pa.Table) -> None:
        """Stage quarantine rows (:data:`~clickloop.lake.quarantine.QUARANTINE_SCHEMA`)."""
        n = rejects.num_rows
        if n == 0:
            return
        if rejects.schema != QUARANTINE_SCHEMA:
            rejects = rejects.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)
        self.counts.received += n
        for reason, count in _value_counts(rejects.column("reason")).items():
            self.counts.quarantined[reason] = self.counts.quarantined.get(reason, 0) + count
        received = _micros(rejects.column("received_at"))
        for day, rows in _groups(received // DAY_US):
            staged = self._quarantine.get(day)
            if staged is None:
                staged = self._quarantine[day] = _Staged(
                    self.lake,
                    self.writer.new_name(f"{QUARANTINE_DIR}/dt={day_name(day)}"),
                    QUARANTINE_SCHEMA,
                )
            part = rejects if rows is None else rejects.take(pa.array(rows))
            r = received if rows is None else received[rows]
            staged.add(part, r, r)

    def checkpoint(self, key: str, value: Any, *, expect: Any = ...) -> None:
        """Advance a source checkpoint with this commit; ``expect`` = the value it must
        still have when the commit lands (optimistic concurrency between writers)."""
        self.checkpoints[key] = value
        if expect is not ...:
            self.expect[key] = expect

    @property
    def records(self) -> int:
        return self.counts.received

    # -- finishing -----------------------------------------------------------------------

    def commit(self) -> CommitResult:
        """Publish everything staged; raise :class:`ConflictError` if it no longer applies."""
        if self._done:
            raise RuntimeError("transaction already finished")
        started = time.perf_counter()
        if not (self.counts.received or self.checkpoints):
            self._done = True
            return CommitResult(None)
        try:
            entries = self._close_files()
            commit = Commit(
                operation=self.operation,
                add=entries,
                counts={self.source: self.counts} if self.counts.received else {},
                checkpoints=self.checkpoints,
                expect=self.expect,
                writer=self.writer.id,
                info=self.info,
            )
            retries = 0
            while not self.writer.log.try_commit(commit):
                retries += 1
                others = self.writer.sync()
                if others is not None and self.counts.accepted:
                    self._drop_late_duplicates(others, commit)
        except BaseException:
            self.abort()
            raise
        self._done = True
        self.writer.committed(commit, self._pending)
        total = sum(e.bytes for e in commit.add)
        return CommitResult(
            commit.version,
            dict(commit.counts),
            list(commit.add),
            total,
            time.perf_counter() - started,
            retries,
        )

    def _close_files(self) -> list[FileEntry]:
        entries = []
        for kind, staged_map in (("events", self._events), ("quarantine", self._quarantine)):
            for day, staged in sorted(staged_map.items()):
                staged.close()
                ids = None
                if kind == "events":
                    ids = _sidecar_name(staged.rel)
                    h, t = np.concatenate(staged.hashes), np.concatenate(staged.ts)
                    self.lake.storage.put_atomic(ids, encode_sidecar(h, t))
                entries.append(
                    FileEntry(
                        path=staged.rel,
                        kind=kind,
                        dt=day_name(day),
                        rows=staged.rows,
                        bytes=staged.size,
                        ts_min=int(staged.ts_min),
                        ts_max=int(staged.ts_max),
                        received_max=int(staged.received_max),
                        ids=ids,
                        source=self.source,
                    )
                )
        return entries

    def _drop_late_duplicates(self, others: IdIndex, commit: Commit) -> None:
        """Another writer committed ids this transaction also accepted: drop ours."""
        horizon = self.writer.horizon_us
        for i, entry in enumerate(commit.add):
            if entry.kind != "events" or entry.ids is None:
                continue
            h, t = decode_sidecar(self.lake.storage.read(entry.ids), entry.ids)
            if not others.contains(h, t, horizon).any():
                continue
            table = pq.read_table(self.lake.storage.path(entry.path), filesystem=self.lake.arrow_fs)
            hashes = id_hash(table.column("event_id"))
            ts = _micros(table.column("ts"))
            clash = others.contains(hashes, ts, horizon)
            k = int(clash.sum())
            log.info("dropping %d events another writer committed first (%s)", k, entry.path)
            self.counts.accepted -= k
            self.counts.duplicates += k
            self._pending = _without(self._pending, hashes[clash], ts[clash])
            old_path, old_ids = entry.path, entry.ids
            keep = pa.array(~clash)
            if k == table.num_rows:
                commit.add[i] = None  # type: ignore[call-overload]
            else:
                rel = self.writer.new_name(old_path.rsplit("/", 1)[0])
                staged = _Staged(self.lake, rel, EVENT_SCHEMA)
                received = _micros(table.column("received_at"))
                staged.add(table.filter(keep), ts[~clash], received[~clash])
                staged.close()
                ids = _sidecar_name(staged.rel)
                self.lake.storage.put_atomic(ids, encode_sidecar(hashes[~clash], ts[~clash]))
                commit.add[i] = FileEntry(
                    path=staged.rel, kind="events", dt=entry.dt, rows=staged.rows,
                    bytes=staged.size, ts_min=int(staged.ts_min), ts_max=int(staged.ts_max),
                    received_max=int(staged.received_max), ids=ids, source=self.source,
                )  # fmt: skip
            self.lake.storage.remove(old_path)
            self.lake.storage.remove(old_ids)
        commit.add = [e for e in commit.add if e is not None]
        commit.counts = {self.source: self.counts}

    def abort(self) -> None:
        """Discard everything staged (files written aside are deleted)."""
        if self._done:
            return
        self._done = True
        for staged in [*self._events.values(), *self._quarantine.values()]:
            staged.abort()
            for rel in (staged.rel, _sidecar_name(staged.rel)):
                with contextlib.suppress(Exception):
                    self.lake.storage.remove(rel)

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or not self._done:
            self.abort()


class LakeWriter:
    """One process's writing handle on a lake (writer id, dedupe index, liveness lock)."""

    def __init__(
        self,
        lake: Lake,
        *,
        horizon: timedelta = timedelta(days=7),
    ) -> None:
        self.lake = lake
        self.id = uuid.uuid4().hex[:12]
        self.horizon_us = int(horizon.total_seconds() * 1_000_000)
        self._horizon_days = max(1, math.ceil(horizon.total_seconds() / 86400))
        self.index = IdIndex()
        self._days: set[int] = set()
        self._loaded: dict[str, int] = {}  # events file path → day, for files in the index
        self._seq = 0
        self._lock_fd: int | None = None
        if lake.storage.local:
            self._lock_fd = _hold_lock(lake.storage.path(f"{WRITERS_DIR}/{self.id}.lock"))
        # its own view of the log: the dedupe index must see every commit exactly once,
        # whoever else refreshes the lake's shared state
        self.log = CommitLog(lake.storage)
        self.log.refresh()
        if lake.storage.local:
            from clickloop.lake.maintenance import remove_dead_writers_files

            remove_dead_writers_files(lake)

    def new_name(self, directory: str) -> str:
        self._seq += 1
        return f"{directory}/part-{self.id}-{self._seq:06d}.parquet"

    def begin(self, source: str, operation: str = "append") -> Transaction:
        """Start a transaction whose records are counted under ``source``."""
        return Transaction(self, source, operation)

    # -- the dedupe index ----------------------------------------------------------------

    def ensure(self, ts_min_us: int, ts_max_us: int) -> None:
        """Load the sidecars of every committed events file an event in the range could
        duplicate (its days ± the horizon)."""
        lo = day_of(ts_min_us) - self._horizon_days
        hi = day_of(ts_max_us) + self._horizon_days
        need = set(range(lo, hi + 1)) - self._days
        if not need:
            return
        self._days |= need
        entries = [
            e
            for e in self.log.state.files.values()
            if e.kind == "events" and e.ids and e.path not in self._loaded
            and day_number(e.dt) in need
        ]  # fmt: skip
        self._load(entries)

    def _load(self, entries: list[FileEntry]) -> IdIndex:
        fresh = IdIndex()
        if not entries:
            return fresh
        parts = [decode_sidecar(self.lake.storage.read(e.ids), e.ids) for e in entries if e.ids]
        h = np.concatenate([p[0] for p in parts])
        t = np.concatenate([p[1] for p in parts])
        self.index.add(h, t)
        fresh.add(h, t)
        for e in entries:
            self._loaded[e.path] = day_number(e.dt)
        return fresh

    def sync(self) -> IdIndex | None:
        """Catch up with other writers' commits; return the ids they added in loaded days."""
        log_ = self.log
        before = set(log_.state.files)
        log_.refresh()
        if log_.changes is None:  # reloaded from a checkpoint: diff the live files
            added = [e for p, e in log_.state.files.items() if p not in before]
        else:
            added = []
            for c in log_.changes:
                if c.remove and all(p in self._loaded for p in c.remove):
                    for e in c.add:  # compaction of files already indexed: same ids
                        self._loaded[e.path] = day_number(e.dt)
                    continue
                added += c.add
        wanted = [
            e
            for e in added
            if e.kind == "events" and e.ids and e.path not in self._loaded
            and day_number(e.dt) in self._days
        ]  # fmt: skip
        return self._load(wanted) if wanted else None

    def committed(self, commit: Commit, pending: IdIndex) -> None:
        h, t = pending.pairs()
        self.index.add(h, t, presorted=True)
        for e in commit.add:
            if e.kind == "events":
                self._loaded[e.path] = day_number(e.dt)

    def trim(self, newest_us: int) -> None:
        """Forget ids too old to matter for events near ``newest_us`` (bounds memory of a
        long-running ingester; they are reloaded if a late event needs them)."""
        keep_from = day_of(newest_us) - 2 * self._horizon_days - 1
        old = {d for d in self._days if d < keep_from}
        if not old:
            return
        self.index.trim(keep_from * DAY_US - self.horizon_us)
        self._days -= old
        self._loaded = {p: d for p, d in self._loaded.items() if d not in old}

    def close(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                Path(self.lake.storage.path(f"{WRITERS_DIR}/{self.id}.lock")).unlink()
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> LakeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hold_lock(path: str) -> int:
    import fcntl

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _sidecar_name(rel: str) -> str:
    directory, name = rel.rsplit("/", 1)
    partition = directory.rsplit("/", 1)[-1]
    return f"{INDEX_DIR}/{partition}/{name.removesuffix('.parquet')}.ids"


def _micros(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return np.asarray(arr.cast(pa.int64()).to_numpy(zero_copy_only=False), np.int64)


def _groups(days: np.ndarray) -> Iterator[tuple[int, np.ndarray | None]]:
    """``(day, rows)`` per distinct day, rows in input order (``None`` = all rows)."""
    first = int(days[0])
    if (days == first).all():
        yield first, None
        return
    order = np.argsort(days, kind="stable")
    sorted_days = days[order]
    bounds = np.nonzero(np.diff(sorted_days))[0] + 1
    for chunk in np.split(order, bounds):
        yield int(days[chunk[0]]), chunk


def _value_counts(col: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    counts = col.value_counts()
    return {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}


def _without(index: IdIndex, hashes: np.ndarray, ts: np.ndarray) -> IdIndex:
    """A copy of ``index`` without the given pairs."""
    h, t = index.pairs()
    drop = set(zip(hashes.tolist(), ts.tolist(), strict=True))
    keep = np.array([(a, b) not in drop for a, b in zip(h.tolist(), t.tolist(), strict=True)], bool)
    out = IdIndex()
    out.add(h[keep], t[keep], presorted=True)
    return out


def utc_now_us() -> int:
    return int(datetime.now(UTC).timestamp() * 1_000_000)
