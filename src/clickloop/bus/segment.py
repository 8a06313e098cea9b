"""The on-disk format of the local bus: checksummed record batches in segment files.

A partition directory (``<bus>/<topic>/<partition>/``) holds::

    00000000000000000000.log   a segment: record batches back to back, named by its first offset
    00000000000000000000.idx   its sparse index: (offset, position, timestamp) about every 4 KiB
    00000000000000052311.log   the next segment, started once the previous one passed segment_bytes
    head                       the writers' shared tail pointer (segment, position, next offset)
    lock                       flock held by the writer appending

A *batch* is the unit of atomicity and of checksumming: a header, then
``count`` records. Header (36 bytes, little-endian)::

    u32 header_crc   crc32 of the 32 header bytes that follow
    u32 length       bytes of the whole batch, header included
    u64 base_offset  offset of the first record
    u32 count        records in the batch
    i64 timestamp_ms append time
    u32 body_crc     crc32 of the body
    u16 magic        0xC10C
    u16 flags        0 (reserved)

Body: per record ``i32 key_length`` (-1: no key), ``u32 value_length``, key, value.

The header has its own checksum so that ``base_offset`` can be filled in under
the partition lock (cheap) while the body checksum is computed before taking
it. A batch whose length, checksums or offset do not line up is *not a record*:
readers stop before it (it is being written, or it is the torn tail of a
writer killed mid-write) and the next writer truncates it.
"""

from __future__ import annotations

import bisect
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from clickloop.bus.base import Message
from clickloop.errors import PayloadTooLargeError, UsageError

HEADER: Final = struct.Struct("<IIQIqIHH")
HEADER_SIZE: Final = HEADER.size  # 36
MAGIC: Final = 0xC10C
RECORD: Final = struct.Struct("<iI")
INDEX_ENTRY: Final = struct.Struct("<QQq")  # offset, position, timestamp_ms
INDEX_INTERVAL: Final = 4096  # bytes of log between index entries
MAX_BATCH_BYTES: Final = 1 << 20  # records are grouped into batches of about this size
MAX_RECORD_BYTES: Final = 64 << 20  # one key + value; larger records are refused
SEGMENT_SUFFIX: Final = ".log"
INDEX_SUFFIX: Final = ".idx"


def segment_name(base: int) -> str:
    return f"{base:020d}{SEGMENT_SUFFIX}"


def index_name(base: int) -> str:
    return f"{base:020d}{INDEX_SUFFIX}"


def list_segments(path: Path) -> list[int]:
    """Base offsets of the partition's segments, ascending."""
    try:
        names = os.listdir(path)  # noqa: PTH208 (hot path: plain names, no Path objects)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if name.endswith(SEGMENT_SUFFIX) and len(name) == 20 + len(SEGMENT_SUFFIX):
            stem = name[:20]
            if stem.isdigit():
                out.append(int(stem))
    return sorted(out)


# -- encoding --------------------------------------------------------------------------


@dataclass(slots=True)
class Batch:
    """A batch prepared outside the partition lock; the header is completed inside it."""

    header: bytearray
    body: bytes
    count: int
    body_crc: int

    @property
    def size(self) -> int:
        return HEADER_SIZE + len(self.body)

    def seal(self, base_offset: int, timestamp_ms: int) -> None:
        """Fill in the header for its place in the log."""
        HEADER.pack_into(
            self.header,
            0,
            0,
            self.size,
            base_offset,
            self.count,
            timestamp_ms,
            self.body_crc,
            MAGIC,
            0,
        )
        crc = zlib.crc32(memoryview(self.header)[4:])
        struct.pack_into("<I", self.header, 0, crc)


def _finish(parts: list[bytes], count: int, expected: int) -> Batch:
    try:
        body = b"".join(parts)
    except TypeError:
        body = b""
    if len(body) != expected:
        raise UsageError(
            "bus records must be (key, value) pairs of bytes (key may be None)",
            hint="encode strings first, e.g. value.encode('utf-8')",
        )
    return Batch(bytearray(HEADER_SIZE), body, count, zlib.crc32(body))


def encode(
    records: Sequence[tuple[bytes | None, bytes]], *, one_per_batch: bool = False
) -> list[Batch]:
    """Group ``records`` into batches of about :data:`MAX_BATCH_BYTES` (or one record each)."""
    batches: list[Batch] = []
    parts: list[bytes] = []
    size = 0
    count = 0
    pack = RECORD.pack
    limit = 0 if one_per_batch else MAX_BATCH_BYTES
    append = parts.append
    for rec in records:
        try:
            key, value = rec
            vlen = len(value)
            if key is None:
                append(pack(-1, vlen))
                n = 8 + vlen
            else:
                klen = len(key)
                append(pack(klen, vlen))
                append(key)
                n = 8 + klen + vlen
        except (TypeError, ValueError, struct.error):
            raise UsageError(
                f"bus records must be (key, value) pairs of bytes, got {type(rec).__name__}",
                hint="publish a list of (key_bytes_or_None, value_bytes) tuples",
            ) from None
        if n - 8 > MAX_RECORD_BYTES:
            raise PayloadTooLargeError(
                f"a bus record of {n - 8:,} bytes exceeds the limit of {MAX_RECORD_BYTES:,} bytes",
                hint="store large payloads elsewhere and publish a reference",
            )
        append(value)
        size += n
        count += 1
        if size >= limit:
            batches.append(_finish(parts, count, size))
            parts, size, count = [], 0, 0
            append = parts.append
    if count:
        batches.append(_finish(parts, count, size))
    return batches


# -- decoding --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    length: int
    base_offset: int
    count: int
    timestamp_ms: int
    body_crc: int

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.count


def parse_header(buf: bytes | bytearray | memoryview, at: int = 0) -> Header | None:
    """The header at ``buf[at:]``, or None if it is incomplete or not a valid header."""
    if len(buf) - at < HEADER_SIZE:
        return None
    crc, length, base, count, ts, body_crc, magic, _flags = HEADER.unpack_from(buf, at)
    if magic != MAGIC or length < HEADER_SIZE or zlib.crc32(buf[at + 4 : at + HEADER_SIZE]) != crc:
        return None
    return Header(length, base, count, ts, body_crc)


def read_header(fd: int, position: int) -> Header | None:
    return parse_header(os.pread(fd, HEADER_SIZE, position))


def read_batch(fd: int, position: int, size: int) -> tuple[Header, bytes] | None:
    """The complete, checksum-valid batch at ``position`` (None if torn or incomplete)."""
    head = read_header(fd, position)
    if head is None or position + head.length > size:
        return None
    body = os.pread(fd, head.length - HEADER_SIZE, position + HEADER_SIZE)
    if len(body) != head.length - HEADER_SIZE or zlib.crc32(body) != head.body_crc:
        return None
    return head, body


def decode(
    topic: str, partition: int, head: Header, body: bytes | memoryview, skip: int = 0
) -> list[Message]:
    """The records of a valid batch as messages (the first ``skip`` left out)."""
    keys, values = decode_columns(head, body, skip, where=f"{topic}/{partition}")
    new = tuple.__new__  # skips the named tuple's Python-level __new__: hot path
    first, ts = head.base_offset + skip, head.timestamp_ms
    return [
        new(Message, (topic, partition, first + i, k, v, ts))
        for i, (k, v) in enumerate(zip(keys, values, strict=True))
    ]


def decode_columns(
    head: Header, body: bytes | memoryview, skip: int = 0, *, where: str = "the partition"
) -> tuple[list[bytes | None], list[bytes]]:
    """The keys and values of a valid batch's records (the first ``skip`` left out);
    their offsets are ``head.base_offset + skip`` on, dense."""
    keys: list[bytes | None] = []
    values: list[bytes] = []
    add_key, add_value = keys.append, values.append
    unpack = RECORD.unpack_from
    p = 0
    data = bytes(body)
    for i in range(head.count):
        klen, vlen = unpack(data, p)
        p += 8
        if klen < 0:
            key = None
        else:
            key = data[p : p + klen]
            p += klen
        if i >= skip:
            add_key(key)
            add_value(data[p : p + vlen])
        p += vlen
    if p != len(data):
        from clickloop.errors import DataError

        raise DataError(
            f"bus batch at offset {head.base_offset} of {where} has {len(data) - p} bytes "
            "its records do not account for",
            hint="the segment was written by an incompatible version; restore it from backup",
        )
    return keys, values


# -- index -----------------------------------------------------------------------------


def read_index(fd: int) -> list[tuple[int, int, int]]:
    """Entries of an index file; a partial trailing entry (torn write) is ignored."""
    size = os.fstat(fd).st_size
    data = os.pread(fd, size - size % INDEX_ENTRY.size, 0)
    return list(INDEX_ENTRY.iter_unpack(data))


def locate(fd: int, index_fd: int | None, base: int, offset: int) -> tuple[int, int]:
    """A batch boundary at or before ``offset``: ``(position, offset of that batch)``.

    Uses the last index entry at or before ``offset`` that points at a valid
    header with the offset it claims; without one, the segment start.
    """
    if index_fd is None:
        return (0, base)
    entries = read_index(index_fd)
    i = bisect.bisect_right(entries, (offset, 1 << 64, 1 << 64))
    for off, pos, _ in reversed(entries[:i]):
        head = read_header(fd, pos)
        if head is not None and head.base_offset == off:
            return (pos, off)
    return (0, base)
