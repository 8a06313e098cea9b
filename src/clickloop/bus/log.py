"""One partition of the local bus: the appending writer and the tailing reader.

Several processes may append to one partition: a writer takes the partition's
``flock``, reads the shared ``head`` (segment, byte position, next offset),
checks it against the segment file, appends its batches with one ``pwritev``,
adds index entries and moves the head. Anything that does not line up — a head
behind the file (a writer died between its data and its head write) or bytes
that are not a valid batch (a writer killed mid-write) — sends it through
:meth:`PartitionWriter.recover`, which keeps every valid batch and truncates
the torn tail. Readers need no lock: they serve only complete, checksum-valid
batches with the offset they expect, and wait at anything else.

>>> w = PartitionWriter(path, segment_bytes=64 << 20, retention_ms=7 * 86_400_000)  # doctest: +SKIP
>>> first, last = w.append(encode([(b"u1", b"{}")]))
>>> r = PartitionReader(path, "events", 0, offset=0)
>>> r.read(100)[0].offset
0
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from itertools import repeat
from pathlib import Path
from typing import Final, Literal

from clickloop.bus._fs import FileLock, fsync_dir, write_all
from clickloop.bus.base import Message
from clickloop.bus.segment import (
    HEADER_SIZE,
    INDEX_ENTRY,
    INDEX_INTERVAL,
    Batch,
    decode_columns,
    index_name,
    list_segments,
    locate,
    parse_header,
    read_batch,
    read_header,
    read_index,
    segment_name,
)
from clickloop.errors import DataError

log = logging.getLogger(__name__)

HEAD: Final = struct.Struct("<IQQQq")  # crc, segment base, position, next offset, index position
READ_CHUNK: Final = 1 << 20
RETENTION_CHECK_S: Final = 60.0  # how often an appending writer looks for expired segments
FsyncPolicy = Literal["always", "batch", "never"]
# records of one batch read back: (first offset, append time ms, keys, values), offsets dense
Chunk = tuple[int, int, list[bytes | None], list[bytes]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def read_head(path: Path) -> tuple[int, int, int, int] | None:
    """``(segment base, position, next offset, index position)`` or None if absent/garbled."""
    try:
        with open(path / "head", "rb") as f:
            raw = f.read(HEAD.size)
    except FileNotFoundError:
        return None
    if len(raw) != HEAD.size:
        return None
    crc, base, pos, nxt, ipos = HEAD.unpack(raw)
    if zlib.crc32(raw[4:]) != crc:
        return None
    return base, pos, nxt, ipos


class PartitionWriter:
    """Appends batches to one partition; safe across threads and processes.

    ``fsync`` decides what :meth:`sync` does: ``never`` returns at once (data
    survives a process crash through the page cache, not a power loss);
    otherwise the segment is ``fdatasync``-ed, with concurrent callers sharing
    one call when it already covers their data.
    """

    def __init__(
        self,
        path: Path,
        *,
        segment_bytes: int,
        retention_ms: int,
        fsync: FsyncPolicy = "batch",
        label: str = "",
    ) -> None:
        self.path = path
        self.label = label or str(path)
        self.segment_bytes = segment_bytes
        self.retention_ms = retention_ms
        self.fsync = fsync
        path.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(path / "lock")
        self._head_fd = os.open(path / "head", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._seg_fd = -1
        self._idx_fd = -1
        self._base = -1
        self._pos = 0
        self._next = 0
        self._index_pos = -1
        self._sync_lock = threading.Lock()
        self._fd_mutex = threading.Lock()
        self._synced: tuple[int, int] = (-1, 0)  # (segment base, position) known durable
        self._last_ts: dict[int, int] = {}  # sealed segment → its last append time
        self._retention_checked = 0.0
        with self._lock:
            self._refresh()
            self._apply_retention()

    # -- public ----------------------------------------------------------------------

    def append(self, batches: list[Batch]) -> tuple[int, int, tuple[int, int]]:
        """Append ``batches``; return first offset, next offset and the (segment, end) written."""
        with self._lock:
            self._refresh()
            if time.monotonic() - self._retention_checked > RETENTION_CHECK_S:
                self._apply_retention()
            first = self._next
            pending: list[Batch] = []
            for batch in batches:
                if self._pos >= self.segment_bytes and pending:
                    self._write(pending)
                    pending = []
                if self._pos >= self.segment_bytes:
                    self._roll()
                batch.seal(self._next + sum(b.count for b in pending), _now_ms())
                pending.append(batch)
                if self._pos + sum(b.size for b in pending) >= self.segment_bytes:
                    self._write(pending)
                    pending = []
            if pending:
                self._write(pending)
            return first, self._next, (self._base, self._pos)

    def sync(self, upto: tuple[int, int]) -> None:
        """Make everything written up to ``upto`` (segment base, position) durable."""
        if self.fsync == "never":
            return
        with self._sync_lock:
            if self._synced >= upto:
                return  # another caller's fdatasync already covered it
            with self._fd_mutex:  # appenders may swap the segment meanwhile
                base, fd = self._base, os.dup(self._seg_fd)
            try:
                if base > upto[0]:
                    return  # the segment was sealed (and synced) by a roll since
                end = os.fstat(fd).st_size
                os.fdatasync(fd)
            finally:
                os.close(fd)
            self._synced = max(self._synced, (base, end))

    def end_offset(self) -> int:
        with self._lock:
            self._refresh()
            return self._next

    def recover(self) -> int:
        """Check the tail against the head and repair it; return the next offset."""
        with self._lock:
            self._recover()
            return self._next

    def close(self) -> None:
        for fd in (self._seg_fd, self._idx_fd, self._head_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._seg_fd = self._idx_fd = self._head_fd = -1
        self._lock.close()

    # -- under the lock ----------------------------------------------------------------

    def _write(self, batches: list[Batch]) -> None:
        pos, nxt, ipos = self._pos, self._next, self._index_pos
        entries = []
        buffers: list[bytes | bytearray] = []
        for b in batches:
            if ipos < 0 or pos - ipos >= INDEX_INTERVAL:
                head = parse_header(b.header)
                assert head is not None  # sealed above
                entries.append(INDEX_ENTRY.pack(nxt, pos, head.timestamp_ms))
                ipos = pos
            buffers += (b.header, b.body)
            pos += b.size
            nxt += b.count
        total = pos - self._pos
        written = os.pwritev(self._seg_fd, buffers, self._pos)
        if written != total:  # a short write: finish it the slow way
            write_all(self._seg_fd, b"".join(buffers)[written:], self._pos + written)
        if entries:
            size = os.fstat(self._idx_fd).st_size
            write_all(self._idx_fd, b"".join(entries), size - size % INDEX_ENTRY.size)
        self._pos, self._next, self._index_pos = pos, nxt, ipos
        self._write_head()

    def _write_head(self) -> None:
        body = HEAD.pack(0, self._base, self._pos, self._next, self._index_pos)[4:]
        write_all(self._head_fd, struct.pack("<I", zlib.crc32(body)) + body, 0)

    def _open_segment(self, base: int, *, create: bool) -> bool:
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            seg = os.open(self.path / segment_name(base), flags, 0o644)
        except FileNotFoundError:
            return False
        idx = os.open(self.path / index_name(base), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        with self._fd_mutex:
            old = (self._seg_fd, self._idx_fd)
            self._seg_fd, self._idx_fd, self._base = seg, idx, base
        for fd in old:
            if fd >= 0:
                os.close(fd)
        return True

    def _refresh(self) -> None:
        """Load the shared tail; recover when it does not match the files."""
        raw = os.pread(self._head_fd, HEAD.size, 0)
        if len(raw) == HEAD.size and zlib.crc32(raw[4:]) == HEAD.unpack(raw)[0]:
            _, base, pos, nxt, ipos = HEAD.unpack(raw)
            if (base == self._base or self._open_segment(base, create=False)) and os.fstat(
                self._seg_fd
            ).st_size == pos:
                newer = nxt != base and os.path.exists(self.path / segment_name(nxt))
                if not newer:
                    self._pos, self._next, self._index_pos = pos, nxt, ipos
                    return
        self._recover()

    def _recover(self) -> None:
        bases = list_segments(self.path)
        base = bases[-1] if bases else 0
        self._open_segment(base, create=True)
        if not bases:
            fsync_dir(self.path)
        entries = read_index(self._idx_fd)
        pos, nxt, keep = 0, base, 0
        for i in range(len(entries) - 1, -1, -1):
            off, p, _ = entries[i]
            head = read_header(self._seg_fd, p)
            if head is not None and head.base_offset == off:
                pos, nxt, keep = p, off, i + 1
                break
        ipos = entries[keep - 1][1] if keep else -1
        size = os.fstat(self._seg_fd).st_size
        while pos < size:
            got = read_batch(self._seg_fd, pos, size)
            if got is None or got[0].base_offset != nxt:
                break
            pos += got[0].length
            nxt = got[0].next_offset
        if pos < size:
            log.warning(
                "bus partition %s: truncating %d bytes of torn tail after offset %d "
                "(a writer stopped mid-write; nothing acknowledged is lost)",
                self.label,
                size - pos,
                nxt,
            )
            os.ftruncate(self._seg_fd, pos)
            if self.fsync != "never":
                os.fdatasync(self._seg_fd)
        if os.fstat(self._idx_fd).st_size != keep * INDEX_ENTRY.size:
            os.ftruncate(self._idx_fd, keep * INDEX_ENTRY.size)
        self._pos, self._next, self._index_pos = pos, nxt, ipos
        self._write_head()

    def _roll(self) -> None:
        if self.fsync != "never":
            os.fdatasync(self._seg_fd)
            with self._sync_lock:
                self._synced = max(self._synced, (self._base, self._pos))
        self._last_ts[self._base] = _now_ms()
        self._open_segment(self._next, create=True)
        fsync_dir(self.path)
        if os.fstat(self._seg_fd).st_size:  # left by a writer that died mid-roll
            self._recover()
        else:
            self._pos, self._index_pos = 0, -1
            self._write_head()
        self._apply_retention()

    def _apply_retention(self) -> None:
        """Delete whole sealed segments whose newest record is older than the retention."""
        self._retention_checked = time.monotonic()
        cutoff = _now_ms() - self.retention_ms
        bases = list_segments(self.path)
        deleted = []
        for base in bases[:-1]:  # never the active segment
            if base >= self._base:
                break
            last = self._last_ts.get(base)
            if last is None:
                last = self._segment_last_ts(base)
                if last is None:
                    break
                self._last_ts[base] = last
            if last >= cutoff:
                break
            (self.path / segment_name(base)).unlink(missing_ok=True)
            (self.path / index_name(base)).unlink(missing_ok=True)
            self._last_ts.pop(base, None)
            deleted.append(base)
        if deleted:
            fsync_dir(self.path)
            log.info(
                "bus partition %s: retention deleted %d segment(s) before offset %d",
                self.label,
                len(deleted),
                bases[len(deleted)],
            )

    def _segment_last_ts(self, base: int) -> int | None:
        try:
            fd = os.open(self.path / segment_name(base), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                idx: int | None = os.open(self.path / index_name(base), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                idx = None
            try:
                pos, _ = locate(fd, idx, base, 1 << 62)
            finally:
                if idx is not None:
                    os.close(idx)
            size = os.fstat(fd).st_size
            last = None
            while pos < size:
                head = read_header(fd, pos)
                if head is None:
                    break
                last = head.timestamp_ms
                pos += head.length
            return last
        finally:
            os.close(fd)


class PartitionReader:
    """Reads one partition from an offset on, following new segments as they appear.

    Never returns a record that is not complete and checksum-valid. If the
    offset was deleted by retention, reading resumes at the oldest record kept
    (logged as a warning, as data the group never saw).
    """

    def __init__(self, path: Path, topic: str, partition: int, offset: int) -> None:
        self.path = path
        self.topic = topic
        self.partition = partition
        self.position = offset  # the next offset to deliver
        self._fd = -1
        self._base = -1
        self._pos = 0  # byte position of the next batch
        self._next = 0  # offset of the next batch
        self._pending: deque[Chunk] = deque()  # read from the file, not yet delivered
        self._label = f"{topic}/{partition}"
        self._gap_check = 0.0
        self._seek(offset)

    def read(self, max_messages: int) -> list[Message]:
        out: list[Message] = []
        for first, ts, keys, values in self.read_chunks(max_messages):
            out += messages(self.topic, self.partition, first, ts, keys, values)
        return out

    def read_chunks(self, max_messages: int) -> list[Chunk]:
        """Up to ``max_messages`` records as runs of dense offsets (what column-wise
        polls are made of; :meth:`read` makes messages of them)."""
        out: list[Chunk] = []
        got = 0
        pending = self._pending
        while pending and got < max_messages:
            chunk = pending.popleft()
            room = max_messages - got
            if len(chunk[3]) > room:
                chunk, rest = _split(chunk, room)
                pending.appendleft(rest)
            out.append(chunk)
            got += len(chunk[3])
        stalled = 0
        while got < max_messages and stalled < 3:
            if self._fd < 0:
                self._seek(self.position)
                if self._fd < 0:
                    break
            more = self._read_batches(max_messages - got)
            if more:
                out += more
                got += sum(len(c[3]) for c in more)
                stalled = 0
                continue
            where = (self._base, self._pos)
            if not self._next_segment():
                break
            stalled += (self._base, self._pos) == where
        if out:
            self.position = out[-1][0] + len(out[-1][3])
        return out

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = -1

    # -- internals ---------------------------------------------------------------------

    def _seek(self, offset: int) -> None:
        self.close()
        self._pending.clear()
        bases = list_segments(self.path)
        if not bases:
            return
        if offset < bases[0]:
            log.warning(
                "bus %s/%d: offsets %d..%d were deleted by retention before being read; "
                "resuming at %d",
                self.topic,
                self.partition,
                offset,
                bases[0] - 1,
                bases[0],
            )
            offset = bases[0]
        base = max(b for b in bases if b <= offset)
        try:
            fd = os.open(self.path / segment_name(base), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # deleted by retention just now
            return
        try:
            idx: int | None = os.open(self.path / index_name(base), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            idx = None
        try:
            pos, nxt = locate(fd, idx, base, offset)
        finally:
            if idx is not None:
                os.close(idx)
        self._fd, self._base, self._pos, self._next = fd, base, pos, nxt
        self.position = offset

    def _read_batches(self, want: int) -> list[Chunk]:
        size = os.fstat(self._fd).st_size
        out: list[Chunk] = []
        got = 0
        while self._pos < size and got < want:
            chunk = os.pread(self._fd, min(READ_CHUNK, size - self._pos), self._pos)
            view = memoryview(chunk)
            at = 0
            while at < len(chunk) and got < want:
                head = parse_header(view, at)
                if head is None and len(chunk) - at < HEADER_SIZE:
                    if size - (self._pos + at) < HEADER_SIZE:
                        return self._stop(out, at)  # a header still being written
                    break  # the header is cut by the chunk: read on from here
                if head is None or head.base_offset != self._next:
                    return self._stop(out, at)
                if at + head.length > len(chunk):
                    if self._pos + at + head.length > size:
                        return self._stop(out, at)  # still being written
                    if at > 0:
                        break  # re-read from this batch's start
                    body: bytes | memoryview = os.pread(
                        self._fd, head.length - HEADER_SIZE, self._pos + HEADER_SIZE
                    )
                else:
                    body = view[at + HEADER_SIZE : at + head.length]
                if zlib.crc32(body) != head.body_crc:
                    return self._stop(out, at)
                skip = max(0, self.position - head.base_offset)
                at += head.length
                self._next = head.next_offset
                if skip >= head.count:
                    continue
                keys, values = decode_columns(head, body, skip, where=self._label)
                run: Chunk = (head.base_offset + skip, head.timestamp_ms, keys, values)
                room = want - got
                if len(values) > room:
                    run, rest = _split(run, room)
                    self._pending.append(rest)
                out.append(run)
                got += len(run[3])
            self._pos += at
        return out

    def _stop(self, out: list[Chunk], at: int) -> list[Chunk]:
        """Bytes at ``self._pos + at`` are not (yet) a valid batch."""
        self._pos += at
        if not out and self._sealed():
            # a writer may have completed the batch and rolled since we read it
            got = read_batch(self._fd, self._pos, os.fstat(self._fd).st_size)
            if got is not None and got[0].base_offset == self._next:
                return out
            raise DataError(
                f"bus segment {self.path / segment_name(self._base)} is corrupt at byte "
                f"{self._pos} (offset {self._next}) although a later segment exists",
                hint="restore the partition directory from backup, or delete the damaged "
                "segments and let consumers resume at the next one",
            )
        return out

    def _sealed(self) -> bool:
        return any(b > self._base for b in list_segments(self.path))

    def _next_segment(self) -> bool:
        """At the end of the current segment: move to the next one if it exists."""
        nxt_path = self.path / segment_name(self._next)
        if self._next != self._base and os.path.exists(nxt_path):
            if os.fstat(self._fd).st_size > self._pos:
                return True  # the segment got its last batches before being sealed
            try:
                fd = os.open(nxt_path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return False
            os.close(self._fd)
            self._fd, self._base, self._pos = fd, self._next, 0
            return True
        now = time.monotonic()
        if now - self._gap_check < 1.0:
            return False
        self._gap_check = now
        deleted = os.fstat(self._fd).st_nlink == 0
        later = [b for b in list_segments(self.path) if b > self._base]
        if later and os.fstat(self._fd).st_size <= self._pos and (deleted or later[0] > self._next):
            if not deleted:
                log.error(
                    "bus %s/%d: offsets %d..%d are missing (lost in a crash without fsync); "
                    "resuming at %d",
                    self.topic,
                    self.partition,
                    self._next,
                    later[0] - 1,
                    later[0],
                )
            self._seek(max(self.position, later[0]))
            return self._fd >= 0
        if deleted and not later:
            self._seek(self.position)
        return False


def _split(chunk: Chunk, n: int) -> tuple[Chunk, Chunk]:
    """The first ``n`` records of a chunk, and the rest."""
    first, ts, keys, values = chunk
    return (first, ts, keys[:n], values[:n]), (first + n, ts, keys[n:], values[n:])


def messages(
    topic: str, partition: int, first: int, ts: int, keys: list[bytes | None], values: list[bytes]
) -> list[Message]:
    """A chunk's records as messages, built at C speed (``tuple.__new__`` mapped over the
    columns skips the named tuple's Python-level ``__new__``: the hot path of :meth:`poll`)."""
    n = len(values)
    fields = zip(repeat(topic, n), repeat(partition, n), range(first, first + n), keys, values,
                 repeat(ts, n), strict=True)  # fmt: skip
    return list(map(tuple.__new__, repeat(Message, n), fields))
