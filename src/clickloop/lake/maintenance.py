"""Keeping a lake healthy: statistics, compaction, vacuum, and recovery after a crash.

* :func:`stats` — partitions, rows, bytes, newest event and arrival times, and
  the accounting per source (received = accepted + duplicates + quarantined).
* :func:`compact` — merge a partition's small files into files of about
  ``target_file_rows`` rows. Rows are copied as they are (same multiset of
  rows, same accounting); the old files leave the log in the same commit and
  are deleted by :func:`vacuum` once no reader can still be using them.
* :func:`vacuum` — delete files removed by compaction long enough ago, files
  no commit names (left by writers that crashed), and log entries older than
  the previous checkpoint.
* :func:`remove_dead_writers_files` — on a local lake, a writer holds a lock
  while alive; when it has died, what it staged but never committed is
  deleted at once (run when any writer starts).

>>> lake.compact()["merged_files"]                           # doctest: +SKIP
42
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clickloop.errors import ConflictError
from clickloop.events.schema import EVENT_SCHEMA
from clickloop.lake.idindex import decode_sidecar, encode_sidecar, id_hash
from clickloop.lake.log import Commit, FileEntry, SourceCounts
from clickloop.lake.quarantine import QUARANTINE_SCHEMA
from clickloop.lake.writer import (
    EVENTS_DIR,
    INDEX_DIR,
    QUARANTINE_DIR,
    WRITER_ID,
    WRITERS_DIR,
    _micros,
    _sidecar_name,
    _Staged,
)

if TYPE_CHECKING:
    from clickloop.lake.lake import Lake

log = logging.getLogger(__name__)


def iso(us: int | None) -> str | None:
    if us is None:
        return None
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stats(lake: Lake) -> dict[str, Any]:
    """What the lake holds and how every record that came in was accounted for."""
    state = lake.refresh()
    parts: dict[str, dict[str, dict[str, int]]] = {"events": {}, "quarantine": {}}
    newest_event = oldest_event = newest_arrival = None
    for e in state.files.values():
        p = parts[e.kind].setdefault(e.dt, {"files": 0, "rows": 0, "bytes": 0})
        p["files"] += 1
        p["rows"] += e.rows
        p["bytes"] += e.bytes
        if e.kind == "events" and e.rows:
            newest_event = e.ts_max if newest_event is None else max(newest_event, e.ts_max)
            oldest_event = e.ts_min if oldest_event is None else min(oldest_event, e.ts_min)
            newest_arrival = (
                e.received_max if newest_arrival is None else max(newest_arrival, e.received_max)
            )

    def summary(kind: str) -> dict[str, Any]:
        ps = parts[kind]
        return {
            "partitions": len(ps),
            "files": sum(p["files"] for p in ps.values()),
            "rows": sum(p["rows"] for p in ps.values()),
            "bytes": sum(p["bytes"] for p in ps.values()),
        }

    total = SourceCounts()
    for per_source in state.sources.values():
        total.add(per_source)

    def counts(c: SourceCounts) -> dict[str, Any]:
        return {**c.to_json(), "quarantined_total": c.quarantined_total, "balanced": c.balanced}

    stream = {k: v for k, v in state.checkpoints.items() if k.startswith("stream:")}
    return {
        "root": lake.url,
        "version": state.version,
        "last_commit": iso(int(state.last_commit * 1e6)) if state.last_commit else None,
        "events": {
            **summary("events"),
            "oldest_event": iso(oldest_event),
            "newest_event": iso(newest_event),
            "newest_arrival": iso(newest_arrival),
        },
        "quarantine": summary("quarantine"),
        "partitions": [{"dt": dt, **p} for dt, p in sorted(parts["events"].items())],
        "sources": {name: counts(c) for name, c in sorted(state.sources.items())},
        "total": counts(total),
        "imported_files": sum(1 for k in state.checkpoints if k.startswith("file:")),
        "stream_checkpoints": stream,
    }


# -- compaction ----------------------------------------------------------------------------


def compact(
    lake: Lake,
    *,
    target_rows: int | None = None,
    kinds: tuple[str, ...] = ("events", "quarantine"),
    partitions: list[str] | None = None,
) -> dict[str, Any]:
    """Merge each partition's small files into files of about ``target_rows`` rows.

    One commit per partition; a partition changed meanwhile by another
    compaction is skipped (its commit would conflict) and left for next time.
    """
    target = target_rows or lake.target_file_rows
    state = lake.refresh()
    groups: dict[tuple[str, str], list[FileEntry]] = defaultdict(list)
    for e in state.files.values():
        if e.kind in kinds and (partitions is None or e.dt in partitions):
            groups[(e.kind, e.dt)].append(e)
    merged = written = skipped = 0
    with lake.writer() as writer:
        for (kind, dt), entries in sorted(groups.items()):
            bins = _plan(entries, target)
            if not bins:
                continue
            directory = f"{EVENTS_DIR if kind == 'events' else QUARANTINE_DIR}/dt={dt}"
            new = [_merge(lake, writer.new_name(directory), kind, dt, b) for b in bins]
            commit = Commit(
                operation="compact",
                add=new,
                remove=[e.path for b in bins for e in b],
                writer=writer.id,
                info={"partition": f"{kind}/{dt}"},
            )
            try:
                while not lake.log.try_commit(commit):
                    lake.refresh()
            except ConflictError as exc:
                log.info("skipping %s/%s: %s", kind, dt, exc.message)
                for e in new:
                    lake.storage.remove(e.path)
                    if e.ids:
                        lake.storage.remove(e.ids)
                skipped += 1
                continue
            merged += len(commit.remove)
            written += len(new)
    lake.log.write_checkpoint()
    return {"merged_files": merged, "written_files": written, "skipped_partitions": skipped}


def _plan(entries: list[FileEntry], target: int) -> list[list[FileEntry]]:
    """Groups of ≥ 2 small files (in time order), each group about ``target`` rows."""
    small = sorted((e for e in entries if e.rows < target // 2), key=lambda e: (e.ts_min, e.path))
    bins: list[list[FileEntry]] = []
    current: list[FileEntry] = []
    rows = 0
    for e in small:
        if current and rows + e.rows > target:
            bins.append(current)
            current, rows = [], 0
        current.append(e)
        rows += e.rows
    bins.append(current)
    return [b for b in bins if len(b) >= 2]


def _merge(lake: Lake, rel: str, kind: str, dt: str, files: list[FileEntry]) -> FileEntry:
    schema = EVENT_SCHEMA if kind == "events" else QUARANTINE_SCHEMA
    time_col = "ts" if kind == "events" else "received_at"
    staged = _Staged(lake, rel, schema)
    try:
        for e in files:
            pf = pq.ParquetFile(lake.storage.path(e.path), filesystem=lake.arrow_fs)
            for batch in pf.iter_batches(batch_size=64 * 1024):
                table = pa.Table.from_batches([batch]).cast(schema)
                received = _micros(table.column("received_at"))
                staged.add(table, _micros(table.column(time_col)), received)
        staged.close()
    except BaseException:
        staged.abort()
        raise
    ids = None
    if kind == "events":
        parts = [decode_sidecar(lake.storage.read(e.ids), e.ids) for e in files if e.ids]
        ids = _sidecar_name(rel)
        hashes = np.concatenate([p[0] for p in parts])
        lake.storage.put_atomic(ids, encode_sidecar(hashes, np.concatenate([p[1] for p in parts])))
    return FileEntry(
        path=rel,
        kind=kind,
        dt=dt,
        rows=staged.rows,
        bytes=staged.size,
        ts_min=int(staged.ts_min),
        ts_max=int(staged.ts_max),
        received_max=int(staged.received_max),
        ids=ids,
    )


def rebuild_index(lake: Lake) -> int:
    """Rewrite every live events file's dedupe sidecar from its data; return how many."""
    n = 0
    for e in lake.refresh().files.values():
        if e.kind != "events" or not e.ids:
            continue
        table = pq.read_table(
            lake.storage.path(e.path), columns=["event_id", "ts"], filesystem=lake.arrow_fs
        )
        lake.storage.put_atomic(
            e.ids, encode_sidecar(id_hash(table.column("event_id")), _micros(table.column("ts")))
        )
        n += 1
    return n


# -- vacuum and recovery -----------------------------------------------------------------


def _referenced(lake: Lake) -> set[str]:
    state = lake.refresh()
    out: set[str] = set()
    for e in state.files.values():
        out.add(e.path)
        if e.ids:
            out.add(e.ids)
    for path in state.removed:
        out.add(path)
        out.add(_sidecar_name(path))
    return out


def _data_files(lake: Lake) -> list[dict[str, Any]]:
    out = []
    for top in (EVENTS_DIR, QUARANTINE_DIR, INDEX_DIR):
        out += list(lake.storage.walk_files(top))
    return out


def vacuum(lake: Lake, *, older_than: timedelta = timedelta(hours=1)) -> dict[str, Any]:
    """Delete what no reader can need: files compacted away more than ``older_than``
    ago, unreferenced files older than that (or, locally, of dead writers), old log."""
    cutoff = time.time() - older_than.total_seconds()
    state = lake.refresh()
    expired = [p for p, when in state.removed.items() if when < cutoff]
    for path in expired:
        lake.storage.remove(path)
        lake.storage.remove(_sidecar_name(path))
    if expired:
        commit = Commit(operation="vacuum", forget=expired, info={"deleted": len(expired)})
        while not lake.log.try_commit(commit):
            lake.refresh()
    referenced = _referenced(lake)
    dead = _dead_writers(lake) if lake.storage.local else set()
    orphans = 0
    for f in _data_files(lake):
        if f["name"] in referenced:
            continue
        base = f["name"].rsplit("/", 1)[-1]
        m = WRITER_ID.search(base)
        old = f["mtime"] is not None and f["mtime"] < cutoff
        if old or (m is not None and m[1] in dead):
            lake.storage.remove(f["name"])
            orphans += 1
    lake.log.write_checkpoint()
    pruned = lake.log.prune()
    return {"expired_files": len(expired), "orphans": orphans, "log_entries_pruned": pruned}


def _dead_writers(lake: Lake) -> set[str]:
    """Ids of local writers whose lock file nobody holds (their process is gone)."""
    import fcntl

    dead = set()
    for entry in lake.storage.listdir(WRITERS_DIR):
        name = entry["name"].rsplit("/", 1)[-1]
        if not name.endswith(".lock"):
            continue
        path = lake.storage.path(entry["name"])
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # held: alive
        finally:
            os.close(fd)
        dead.add(name.removesuffix(".lock"))
    return dead


def remove_dead_writers_files(lake: Lake) -> int:
    """Delete what crashed local writers staged but never committed; return how many files."""
    dead = _dead_writers(lake)
    if not dead:
        return 0
    referenced = _referenced(lake)
    n = 0
    for f in _data_files(lake):
        m = WRITER_ID.search(f["name"].rsplit("/", 1)[-1])
        if m is not None and m[1] in dead and f["name"] not in referenced:
            lake.storage.remove(f["name"])
            n += 1
    for writer_id in dead:
        with contextlib.suppress(OSError):
            Path(lake.storage.path(f"{WRITERS_DIR}/{writer_id}.lock")).unlink()
    if n:
        log.info("removed %d uncommitted file(s) left by %d crashed writer(s)", n, len(dead))
    return n
