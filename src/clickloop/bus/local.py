"""The embedded bus: a durable append-only log in local files, no server needed.

Layout under the bus directory (``<home>/bus`` by default)::

    <topic>/topic.json               {"partitions": N} — fixed when the topic is created
    <topic>/<partition>/…            segments, index, head (:mod:`clickloop.bus.segment`)
    groups/<group>/…                 membership, ownership, offsets (:mod:`clickloop.bus.groups`)

Guarantees: :meth:`LocalProducer.publish` returns once the records are written
and, per ``fsync``, flushed (``batch``: one ``fdatasync`` per partition per
call, shared by concurrent callers; ``always``: one per record; ``never``:
none — safe against a process crash, not a power loss). A writer killed at any
instant leaves at worst a torn tail, which readers never serve and the next
writer (or opening the bus) truncates; every publish that returned is kept.
Several processes may produce to and consume from one bus directory on one
host (not over NFS). Readers may see a record a moment before its ``fsync``
completes; after a *power loss* such a record can disappear, which consumers
detect and log.

>>> bus = LocalBus("/srv/shop/.clickloop/bus")                 # doctest: +SKIP
>>> bus.producer().publish("events", [(b"u1", b'{"event_id": "e1"}')])
>>> c = bus.consumer("lake-ingest", ["events"])
>>> [m.value for m in c.poll(max_messages=100, timeout=1.0)]
[b'{"event_id": "e1"}']
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import numpy as np
import xxhash

from clickloop.bus._fs import check_name, fsync_dir
from clickloop.bus.base import Bus, Consumer, Message, MessageBatch, Producer, TopicPartition
from clickloop.bus.groups import GroupMember, read_offsets
from clickloop.bus.log import PartitionReader, PartitionWriter, messages, read_head
from clickloop.bus.segment import Batch, encode
from clickloop.config.infra import LocalBusConfig
from clickloop.errors import BackendUnavailableError, DataError, UsageError

log = logging.getLogger(__name__)

IDLE_SLEEP_MAX: Final = 0.02  # longest nap of an idle poll: bounds the delivery latency
# records of one partition with dense offsets: (topic, partition), first offset, time, keys, values
_Run = tuple[TopicPartition, int, int, list[bytes | None], list[bytes]]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a keyed record: a stable hash, the same in every process and run."""
    return xxhash.xxh3_64_intdigest(key) % partitions


class LocalBus(Bus):
    """The embedded durable log (see the module documentation)."""

    def __init__(self, path: str | os.PathLike[str], config: LocalBusConfig | None = None) -> None:
        self.path = Path(path)
        self.config = config or LocalBusConfig()
        self._partitions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.recover()
        except OSError as exc:
            raise BackendUnavailableError(
                f"cannot open the local bus at {self.path}: {exc}",
                hint="check that the directory is writable (bus.path, or the project's home)",
            ) from exc

    # -- topics ------------------------------------------------------------------------

    def partitions(self, topic: str) -> int:
        """The topic's partition count; creates the topic (``config.partitions``) if new."""
        n = self._partitions.get(topic)
        if n is not None:
            return n
        check_name("topic", topic)
        meta = self.path / topic / "topic.json"
        if not meta.exists():
            self._create_topic(topic)
        try:
            n = int(json.loads(meta.read_bytes())["partitions"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"bus topic metadata {meta} is unreadable: {exc}",
                hint='restore it, or write {"partitions": N} with the count the topic had',
            ) from exc
        if n != self.config.partitions:
            log.info(
                "bus topic %r keeps the %d partitions it was created with (config says %d)",
                topic,
                n,
                self.config.partitions,
            )
        with self._lock:
            self._partitions[topic] = n
        return n

    def topics(self) -> list[str]:
        """Topics that exist in this bus directory."""
        return sorted(p.parent.name for p in self.path.glob("*/topic.json"))

    def _create_topic(self, topic: str) -> None:
        tdir = self.path / topic
        tdir.mkdir(parents=True, exist_ok=True)
        tmp = tdir / f".topic.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_bytes(json.dumps({"partitions": self.config.partitions}).encode())
        with contextlib.suppress(FileExistsError):  # another process created it first
            os.link(tmp, tdir / "topic.json")
        tmp.unlink()
        fsync_dir(tdir)

    def _writer(self, topic: str, partition: int) -> PartitionWriter:
        return PartitionWriter(
            self.path / topic / str(partition),
            segment_bytes=self.config.segment_bytes,
            retention_ms=int(self.config.retention.total_seconds() * 1000),
            fsync=self.config.fsync,
            label=f"{topic}/{partition}",
        )

    def recover(self) -> dict[TopicPartition, int]:
        """Check every partition's tail, truncate torn writes and apply retention.

        Runs on open; returns the end offset of each partition.
        """
        ends = {}
        for topic in self.topics():
            for p in range(self.partitions(topic)):
                w = self._writer(topic, p)
                try:
                    ends[(topic, p)] = w.end_offset()
                finally:
                    w.close()
        return ends

    # -- Bus ---------------------------------------------------------------------------

    def producer(self) -> LocalProducer:
        self._check_open()
        return LocalProducer(self)

    def consumer(self, group: str, topics: Sequence[str]) -> LocalConsumer:
        """A member of ``group`` reading ``topics`` (from the group's committed offsets)."""
        self._check_open()
        return LocalConsumer(self, group, topics)

    def end_offsets(self, topic: str) -> dict[int, int]:
        out = {}
        for p in range(self.partitions(topic)):
            head = read_head(self.path / topic / str(p))
            if head is None:  # never written (or a garbled head): let a writer settle it
                w = self._writer(topic, p)
                try:
                    out[p] = w.end_offset()
                finally:
                    w.close()
            else:
                out[p] = head[2]
        return out

    def committed_offsets(self, group: str, topic: str) -> dict[int, int]:
        check_name("group", group)
        stored = read_offsets(self.path / "groups" / group)
        return {p: stored.get((topic, p), 0) for p in range(self.partitions(topic))}

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"the local bus at {self.path} is closed")


class LocalProducer(Producer):
    """Appends to the local log; thread-safe, and safe alongside producers in other processes."""

    def __init__(self, bus: LocalBus) -> None:
        self.bus = bus
        self._writers: dict[TopicPartition, PartitionWriter] = {}
        self._lock = threading.Lock()
        self._spread = itertools.count(random.randrange(1 << 16))
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    def publish(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Append ``records``; return once they are durable (per ``fsync``).

        Keyed records go to ``partition_for(key)``; keyless ones round-robin.
        Each partition's share of one call is written together; a call that
        raises may have stored some of its records (publish again — consumers
        deduplicate).
        """
        if self._closed:
            raise UsageError("publish on a closed producer")
        if not records:
            return
        n = self.bus.partitions(topic)
        parts: dict[int, list[tuple[bytes | None, bytes]]] = {}
        try:
            for rec in records:
                key = rec[0]
                p = next(self._spread) % n if key is None else partition_for(key, n)
                parts.setdefault(p, []).append(rec)
        except (TypeError, IndexError):
            raise UsageError(
                "bus records must be (key, value) pairs of bytes (key may be None)",
                hint="publish a list of (key_bytes_or_None, value_bytes) tuples",
            ) from None
        always = self.bus.config.fsync == "always"
        # encode (and so validate) everything before writing anything
        encoded = {p: encode(recs, one_per_batch=always) for p, recs in parts.items()}
        try:
            self._append(topic, encoded, always)
        except OSError as exc:
            raise BackendUnavailableError(
                f"the local bus at {self.bus.path} could not store records of {topic!r}: {exc}",
                hint="free disk space or fix the directory's permissions, then publish again "
                "(records written before the failure are kept; consumers deduplicate)",
            ) from exc

    def _append(self, topic: str, encoded: dict[int, list[Batch]], always: bool) -> None:
        written = []
        for p, batches in encoded.items():
            w = self._writer(topic, p)
            if always:
                for b in batches:
                    w.sync(w.append([b])[2])
            else:
                written.append((w, w.append(batches)[2]))
        if len(written) > 1:
            # concurrent fdatasyncs share the filesystem's journal commits
            list(self._syncer().map(lambda wu: wu[0].sync(wu[1]), written))
        elif written:
            written[0][0].sync(written[0][1])

    def _syncer(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        min(8, self.bus.config.partitions), thread_name_prefix="bus-fsync"
                    )
        return self._pool

    def _writer(self, topic: str, partition: int) -> PartitionWriter:
        w = self._writers.get((topic, partition))
        if w is None:
            with self._lock:
                w = self._writers.get((topic, partition))
                if w is None:
                    w = self._writers[(topic, partition)] = self.bus._writer(topic, partition)
        return w

    def close(self) -> None:
        self._closed = True
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            for w in self._writers.values():
                w.close()
            self._writers.clear()


class LocalConsumer(Consumer):
    """A consumer-group member reading the local log; use it from one thread.

    It receives messages only from the partitions it owns, starting at the
    group's committed offsets. Ownership changes (members joining, leaving,
    expiring) are applied inside :meth:`poll`.
    """

    def __init__(self, bus: LocalBus, group: str, topics: Sequence[str]) -> None:
        check_name("group", group)
        if isinstance(topics, str) or not topics:
            raise UsageError(
                f"a consumer needs a list of topics, got {topics!r}",
                hint='e.g. bus.consumer("lake-ingest", ["events"])',
            )
        for t in topics:
            bus.partitions(t)
        self.bus = bus
        self.group = group
        timeout = bus.config.session_timeout.total_seconds()
        self._member = GroupMember(
            bus.path, group, topics, partitions=bus.partitions, session_timeout=timeout
        )
        self._readers: dict[TopicPartition, PartitionReader] = {}
        self._sync_every = min(1.0, timeout / 5)
        self._synced_at = 0.0
        self._turn = 0
        self._closed = False
        self._sync()

    @property
    def member_id(self) -> str:
        return self._member.member_id

    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to ``max_messages`` from owned partitions; waits up to ``timeout`` s for some."""
        out: list[Message] = []
        for (topic, part), first, ts, keys, values in self._fetch(max_messages, timeout):
            out += messages(topic, part, first, ts, keys, values)
        return out

    def poll_batch(self, max_messages: int, timeout: float) -> MessageBatch:
        """:meth:`poll`, column-wise (see :meth:`Consumer.poll_batch`)."""
        runs = self._fetch(max_messages, timeout)
        if not runs:
            return MessageBatch.empty()
        names: dict[str, int] = {}
        tids, parts, firsts, sizes, stamps = [], [], [], [], []
        for (topic, part), first, ts, _, values in runs:
            tids.append(names.setdefault(topic, len(names)))
            parts.append(part)
            firsts.append(first)
            sizes.append(len(values))
            stamps.append(ts)
        n = sum(sizes)
        size = np.array(sizes, np.int64)
        # offsets: each run's first offset, then +1 per record within the run
        starts = np.repeat(np.array(firsts, np.int64) - (np.cumsum(size) - size), size)
        return MessageBatch(
            list(itertools.chain.from_iterable(r[4] for r in runs)),
            np.repeat(np.array(parts, np.int32), size),
            starts + np.arange(n, dtype=np.int64),
            topics=tuple(names),
            topic_ids=np.repeat(np.array(tids, np.uint16), size),
            keys=list(itertools.chain.from_iterable(r[3] for r in runs)),
            timestamps_ms=np.repeat(np.array(stamps, np.int64), size),
        )

    def _fetch(self, max_messages: int, timeout: float) -> list[_Run]:
        if self._closed:
            raise UsageError("poll on a closed consumer")
        if max_messages < 1 or timeout < 0:
            raise UsageError(
                f"poll needs max_messages >= 1 and timeout >= 0, got {max_messages}, {timeout}"
            )
        self._member.polled()
        deadline = time.monotonic() + timeout
        nap = 0.001
        while True:
            now = time.monotonic()
            every = 0.1 if self._member.pending else self._sync_every
            if now - self._synced_at >= every:
                self._sync()
            out = self._read(max_messages)
            if out:
                return out
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            time.sleep(min(left, nap))
            nap = min(nap * 2, IDLE_SLEEP_MAX)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self._closed:
            raise UsageError("commit on a closed consumer")
        self._member.commit(offsets)

    def committed(self) -> dict[TopicPartition, int]:
        return self._member.committed(self.assignment())

    def assignment(self) -> list[TopicPartition]:
        return sorted(self._readers)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for r in self._readers.values():
            r.close()
        self._readers.clear()
        self._member.leave()

    # -- internals ---------------------------------------------------------------------

    def _sync(self) -> None:
        owned = self._member.sync(self._readers)
        for tp in [tp for tp in self._readers if tp not in owned]:
            self._readers.pop(tp).close()
        for tp, start in owned.items():
            if start is None:
                continue
            if tp in self._readers:
                self._readers.pop(tp).close()
            topic, p = tp
            self._readers[tp] = PartitionReader(self.bus.path / topic / str(p), topic, p, start)
        self._synced_at = time.monotonic()

    def _read(self, max_messages: int) -> list[_Run]:
        """Runs of records from the owned partitions, taking turns at which comes first."""
        readers = [self._readers[tp] for tp in sorted(self._readers)]
        if not readers:
            return []
        out: list[_Run] = []
        got = 0
        start = self._turn % len(readers)
        self._turn += 1
        for r in readers[start:] + readers[:start]:
            tp = (r.topic, r.partition)
            for first, ts, keys, values in r.read_chunks(max_messages - got):
                out.append((tp, first, ts, keys, values))
                got += len(values)
            if got >= max_messages:
                break
        return out


__all__ = ["LocalBus", "LocalConsumer", "LocalProducer", "partition_for"]
