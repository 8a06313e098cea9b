"""The stream ingester: the bus's ``events`` topic into the lake, exactly once.

It consumes in micro-batches bounded by size and time
(``ingest.batch_max_events``, ``ingest.batch_max_wait``), validates every
message like any other input (producers outside clickloop may publish),
commits the batch to the lake, and only then commits the bus offsets.

Exactly once, across crashes and rebalances: the lake commit itself records,
per partition, the next offset and a hash of the last message it covers
(``stream:<bus>:<group>:<topic>:<partition>`` checkpoints). So:

* killed between the lake commit and the bus commit, the next owner of the
  partition receives those messages again, sees the lake already holds them
  (the message just below the checkpoint hashes the same) and skips them;
* if the bus itself lost its log (a broker on memory storage restarted, a
  topic was re-created) the offsets start again below the checkpoint, but the
  message there differs (or does not exist): the ingester notices, starts the
  partition's checkpoint afresh and loses nothing;
* a lake commit names the checkpoint it expects; if another ingester of the
  group advanced the partition meanwhile (a rebalance), the commit is refused,
  the batch is dropped, and the consumer rejoins from the committed offsets.

Several ingesters in one consumer group share the partitions.

>>> ing = StreamIngester(lake, bus, group="clickloop-lake")   # doctest: +SKIP
>>> ing.run(stop=threading.Event())                           # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from clickloop.bus.base import (
    Bus,
    Consumer,
    Message,
    MessageBatch,
    PartitionsRevokedError,
    TopicPartition,
)
from clickloop.errors import BackendUnavailableError, ConflictError
from clickloop.events.mapping import Mapping
from clickloop.ingest.crash import CrashHook
from clickloop.ingest.metrics import IngestMetrics
from clickloop.ingest.process import Outcome, merge_outcomes, process_messages
from clickloop.lake.log import SourceCounts

if TYPE_CHECKING:
    from clickloop.lake.lake import Lake
    from clickloop.lake.writer import CommitResult, LakeWriter
    from clickloop.project import Project

log = logging.getLogger(__name__)

DEFAULT_GROUP = "clickloop-lake"


WATCH_EVERY = 10.0  # seconds of silence before checking a partition's offsets
WATCH_MAX = 300.0


def _origins(batch: MessageBatch, start: int) -> Callable[[int], str]:
    """Where message ``start + i`` came from (``topic/partition@offset``), asked for rejects
    only: the batch builds no per-message object for the others."""

    def origin(i: int) -> str:
        return batch.origin(start + i)

    return origin


def message_hash(value: bytes) -> str:
    return xxhash.xxh3_64_hexdigest(value)


@dataclass
class _Batch:
    """A micro-batch being parsed on the worker thread, with what its commit will record."""

    messages: int
    futures: list[Future[Outcome]]  # the batch's slices, in order
    checkpoints: dict[str, Any]  # checkpoint key → value after this batch
    expect: dict[str, Any]  # checkpoint key → value this batch was filtered against
    offsets: dict[TopicPartition, int]  # bus offsets to commit once in the lake


@dataclass
class StreamReport:
    """What the ingester did since it started."""

    source: str
    group: str
    counts: SourceCounts = field(default_factory=SourceCounts)
    batches: int = 0
    skipped: int = 0  # redelivered messages the lake already held
    conflicts: int = 0
    resets: int = 0  # partitions whose bus log was found reset
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "group": self.group,
            **self.counts.to_json(),
            "balanced": self.counts.balanced,
            "batches": self.batches,
            "redelivered_skipped": self.skipped,
            "conflicts": self.conflicts,
            "bus_resets": self.resets,
            "seconds": round(self.seconds, 3),
        }


class StreamIngester:
    """One member of the ingesting consumer group (see the module doc)."""

    def __init__(
        self,
        lake: Lake,
        bus: Bus,
        *,
        group: str = DEFAULT_GROUP,
        topic: str = "events",
        source: str | None = None,
        bus_name: str = "bus",
        mapping: Mapping | None = None,
        max_events: int = 50_000,
        max_wait: timedelta = timedelta(seconds=1),
        max_future: timedelta = timedelta(hours=1),
        metrics: IngestMetrics | None = None,
        workers: int | None = None,
    ) -> None:
        self.lake = lake
        self.bus = bus
        self.group = group
        self.topic = topic
        self.source = source or f"bus:{topic}"
        self.mapping = mapping or Mapping()
        self.max_events = max_events
        self.max_wait = max_wait.total_seconds()
        self.max_future = max_future
        self.metrics = metrics or IngestMetrics()
        self.report = StreamReport(self.source, group)
        self._prefix = f"stream:{bus_name}:{group}:{topic}:"
        self._consumer: Consumer | None = None
        self._writer: LakeWriter | None = None
        self._held: dict[TopicPartition, list[Message]] = defaultdict(list)
        self._verified: dict[TopicPartition, int] = {}  # bus offsets to commit (skipped ranges)
        self._lag_at = 0.0
        self._seen: dict[TopicPartition, float] = {}  # when each partition last delivered
        self._watch_at = time.monotonic()
        self._watch_every = WATCH_EVERY
        self._assigned_at: float | None = None
        session = getattr(getattr(bus, "config", None), "session_timeout", None)
        seconds = session.total_seconds() if isinstance(session, timedelta) else 10.0
        self._rejoin_after = max(30.0, 3 * seconds)
        self._crash = CrashHook()
        self._inflight: _Batch | None = None
        self._committing: tuple[_Batch, Future[tuple[Outcome, CommitResult]]] | None = None
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ingest-parse")
        # one lake commit at a time, off the polling thread: Parquet encoding and the
        # fsyncs of batch k overlap the polling of batch k+1
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="ingest-commit")

    # -- lifecycle -----------------------------------------------------------------------

    def _open(self) -> Consumer:
        if self._consumer is None:
            self._consumer = self.bus.consumer(self.group, [self.topic])
        return self._consumer

    def _reset_consumer(self) -> None:
        """Leave and rejoin the group: resume every partition from its committed offset."""
        try:  # a commit still running finishes first; its messages come again either way
            self._finish_commit(bus=False)
        except Exception as exc:  # not in the lake: redelivered by the rejoined group
            log.warning("a lake commit failed while rejoining the group: %s", exc)
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception as exc:  # closing a broken client: nothing left to save
                log.debug("closing the consumer failed: %s", exc)
            self._consumer = None
        self._held.clear()
        self._verified.clear()
        if self._inflight is not None:  # based on a position the group no longer has
            for f in self._inflight.futures:
                f.cancel()
            self._inflight = None

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        idle_exit: float | None = None,
        on_batch: Callable[[StreamReport], None] | None = None,
    ) -> StreamReport:
        """Ingest until ``stop`` is set (or, with ``idle_exit``, after that many seconds
        without a message); the batch in progress is always finished first.
        ``on_batch(report)`` is called after each lake commit."""
        stop = stop or threading.Event()
        started = time.perf_counter()
        idle_since = time.monotonic()
        backoff = 0.5
        committed = self.report.batches
        self._writer = self.lake.writer()
        try:
            while not stop.is_set():
                try:
                    n = self.step(stop)
                    backoff = 0.5
                except BackendUnavailableError as exc:
                    log.warning("bus unavailable, retrying in %.1fs: %s", backoff, exc.message)
                    self._reset_consumer()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                if self.report.batches != committed:
                    committed = self.report.batches
                    if on_batch is not None:
                        on_batch(self.report)
                if n:
                    idle_since = time.monotonic()
                elif idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                    break
            self.flush()  # stopping: the batch in progress is finished, not dropped
            if on_batch is not None and self.report.batches != committed:
                on_batch(self.report)
        finally:
            self.report.seconds = time.perf_counter() - started
            self._reset_consumer()
            self._writer.close()
            self._writer = None
        return self.report

    def close(self) -> None:
        """Release the worker threads (after :meth:`run`, or when driving :meth:`step`)."""
        self._pool.shutdown(wait=True)
        self._committer.shutdown(wait=True)

    # -- one micro-batch -----------------------------------------------------------------

    def step(self, stop: threading.Event | None = None) -> int:
        """Poll one micro-batch, start parsing it, and commit the previous one meanwhile;
        return how many messages were polled. :meth:`flush` commits the last one."""
        consumer = self._open()
        batch = self._poll(consumer, stop)
        self._update_lag()
        now = time.monotonic()
        by_tp = batch.by_partition()
        for tp in by_tp:
            self._seen[tp] = now
        # the commit started last step ran while this batch was polled: finish it (its bus
        # offsets) before anything reads the writer's state
        self._finish_commit()
        if self._consumer is not consumer:
            return len(batch)  # it conflicted: the group is rejoined, these come again
        if batch:
            self._watch_every = WATCH_EVERY
            self._assigned_at = now  # messages come only from assigned partitions
        elif now - self._watch_at >= self._watch_every:
            self._watch_at = now
            self._watchdog(consumer, now)
        if not batch:
            self.flush()
            return 0
        assert self._writer is not None
        self._writer.sync()  # other writers' commits: their checkpoints and ids
        # what the lake will hold once the batch in flight commits
        view = dict(self._writer.log.state.checkpoints)
        if self._inflight is not None:
            view.update(self._inflight.checkpoints)
        expect: dict[str, Any] = {}
        parts: list[MessageBatch | None] = []  # per partition: None = all of them are new
        for tp, idx in by_tp.items():
            key = self._key(tp)
            expect[key] = view.get(key)
            parts.append(self._new_messages(tp, batch, idx, view.get(key)))
        if all(p is None for p in parts):  # the usual case: the batch as polled
            fresh = batch
        else:
            pairs = zip(parts, by_tp.values(), strict=True)
            fresh = MessageBatch.concat([batch.take(i) if p is None else p for p, i in pairs])
        job = self._submit(fresh, expect) if fresh else None
        # the previous batch commits (on the committer thread) while this one is parsed and
        # the next one polled
        self._start_commit()
        if job is not None:
            self._inflight = job
        else:
            self._finish_commit()
            if self._consumer is consumer:
                self._commit_bus(consumer, {})
        return len(batch)

    def _poll(self, consumer: Consumer, stop: threading.Event | None) -> MessageBatch:
        got: list[MessageBatch] = []
        n = 0
        deadline = time.monotonic() + self.max_wait
        while n < self.max_events:
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set() and n):
                break
            more = consumer.poll_batch(self.max_events - n, min(left, 0.25))
            if more:
                got.append(more)
                n += len(more)
            elif self._inflight is not None:
                self.flush()  # nothing to read right now: commit the batch in flight
                if self._consumer is not consumer:
                    break  # the commit conflicted and the consumer was replaced
            if not more and stop is not None and stop.is_set():
                break
        return MessageBatch.concat(got)

    def _new_messages(
        self, tp: TopicPartition, batch: MessageBatch, idx: np.ndarray, cp: dict[str, Any] | None
    ) -> MessageBatch | None:
        """Of ``tp``'s messages (positions ``idx`` in ``batch``), those the lake does not
        hold yet (see the module doc); None when that is all of them."""
        if not cp:
            return None
        nxt = int(cp["next"])
        offsets = batch.offsets[idx]
        if int(offsets.min()) >= nxt:  # the usual case
            return None
        fresh = batch.take(idx[offsets >= nxt])
        below = batch.take(idx[offsets < nxt]).to_messages()
        held = self._held[tp]
        held += below
        last = next((m for m in held if m.offset == nxt - 1), None)
        if last is None:
            end = self.bus.end_offsets(self.topic).get(tp[1], 0)
            if end >= nxt:  # the message to compare with is still to come
                return fresh
            verdict = False  # the log is shorter than what the lake holds: it was reset
        else:
            verdict = message_hash(last.value) == cp.get("last")
        self._held.pop(tp, None)
        if verdict:
            log.info("skipping %d redelivered message(s) of %s/%d already in the lake",
                     len(held), *tp)  # fmt: skip
            self.report.skipped += len(held)
            self._verified[tp] = nxt
            return fresh
        log.warning(
            "the bus log of %s/%d restarted below the lake's checkpoint (offset %d): "
            "ingesting its records as new", tp[0], tp[1], nxt,
        )  # fmt: skip
        self.report.resets += 1
        again = MessageBatch.from_messages(sorted(held, key=lambda m: m.offset))
        return MessageBatch.concat([again, fresh])

    def _submit(self, msgs: MessageBatch, expect: dict[str, Any]) -> _Batch:
        """Start parsing and validating ``msgs`` on the worker threads."""
        values, offsets = msgs.values, msgs.offsets
        ends = {tp: int(i) for tp, i in msgs.last_positions().items()}
        checkpoints = {
            self._key(tp): {"next": int(offsets[i]) + 1, "last": message_hash(values[i])}
            for tp, i in ends.items()
        }
        now = datetime.now(UTC)
        step = -(-len(msgs) // self.workers)
        futures = [
            self._pool.submit(
                process_messages,
                values[i : i + step],
                self.mapping,
                source=self.source,
                origin=_origins(msgs, i),
                received_at=now,
                max_future=self.max_future,
            )
            for i in range(0, len(msgs), step)
        ]
        bus_offsets = {tp: int(offsets[i]) + 1 for tp, i in ends.items()}
        return _Batch(
            len(msgs), futures, checkpoints, {k: expect[k] for k in checkpoints}, bus_offsets
        )

    def flush(self) -> None:
        """Commit the batch in flight, if any: to the lake, then its offsets to the bus."""
        self._start_commit()
        self._finish_commit()

    def _start_commit(self) -> None:
        """Hand the batch in flight to the committer thread (after the one before it)."""
        self._finish_commit()
        job, self._inflight = self._inflight, None
        if job is not None:
            self._committing = (job, self._committer.submit(self._commit_lake, job))

    def _commit_lake(self, job: _Batch) -> tuple[Outcome, CommitResult]:
        """On the committer thread: the batch's events, rejects and checkpoints, in one
        lake commit (a :class:`ConflictError` if another member advanced a partition)."""
        assert self._writer is not None
        outcome = merge_outcomes([f.result() for f in job.futures])
        txn = self._writer.begin(self.source, "ingest-stream")
        try:
            txn.add_events(outcome.events, outcome.hashes)
            txn.add_rejects(outcome.rejects)
            for key, value in job.checkpoints.items():
                txn.checkpoint(key, value, expect=job.expect[key])
            txn.info = {"messages": job.messages}
            self._crash.at("stream-staged")
            return outcome, txn.commit()
        except BaseException:
            txn.abort()
            raise

    def _finish_commit(self, *, bus: bool = True) -> None:
        """Wait for the lake commit in progress, if any; then commit its bus offsets."""
        pending, self._committing = self._committing, None
        if pending is None:
            return
        job, future = pending
        try:
            outcome, result = future.result()
        except ConflictError as exc:
            self.report.conflicts += 1
            self.metrics.conflicts.inc()
            log.info("dropping a batch: %s; rejoining the group", exc.message)
            if bus:
                self._reset_consumer()
            return
        self._crash.at("stream-lake-committed")
        self.metrics.observe_commit(result, "ingest-stream")
        self.metrics.batch.observe(job.messages)
        self.report.batches += 1
        for c in result.counts.values():
            self.report.counts.add(c)
        if len(outcome.events):
            newest = int(outcome.events.column("ts").cast("int64").to_numpy().max())
            assert self._writer is not None
            self._writer.trim(newest)
        if bus and self._consumer is not None:
            self._commit_bus(self._consumer, job.offsets)

    def _commit_bus(self, consumer: Consumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit bus offsets (the lake already holds everything below them)."""
        todo = {**self._verified, **offsets}
        if not todo:
            return
        for _ in range(3):
            try:
                consumer.commit(todo)
                self._verified.clear()
                return
            except PartitionsRevokedError as exc:
                # those partitions moved; their new owner finds the lake checkpoint
                for tp in exc.partitions:
                    todo.pop(tp, None)
                    self._verified.pop(tp, None)
                    self._held.pop(tp, None)
                if not todo:
                    return
        log.warning("could not commit bus offsets %s; they will be redelivered and skipped", todo)

    def _watchdog(self, consumer: Consumer, now: float) -> None:
        """Rejoin the group if an idle partition's bus offset is behind the lake's checkpoint.

        That happens when the bus lost the group's offsets or its log (a broker on
        memory storage restarted): a client may then wait at its old position in a
        log that restarted from zero, receiving nothing. Rejoining resumes from the
        bus's committed offset, and the checkpoint logic sorts out what is new.
        """
        assert self._writer is not None
        try:
            if not consumer.assignment():
                self._unassigned(now)
                return
            self._assigned_at = now
            committed = consumer.committed()
        except BackendUnavailableError:
            return
        checkpoints = self._writer.log.state.checkpoints
        behind = []
        for tp, offset in committed.items():
            cp = checkpoints.get(self._key(tp))
            stale = now - self._seen.get(tp, 0.0) >= self._watch_every
            if cp and offset < int(cp["next"]) and stale and tp not in self._held:
                behind.append(f"{tp[0]}/{tp[1]} at {offset} < {cp['next']}")
        if behind:
            log.warning(
                "bus offsets behind the lake and nothing arriving (%s): the bus may have lost "
                "its log or offsets; rejoining the group", ", ".join(behind),
            )  # fmt: skip
            self._reset_consumer()
            self._watch_every = min(self._watch_every * 2, WATCH_MAX)

    def _unassigned(self, now: float) -> None:
        """A member that had partitions and has none for long rejoins (once): a client can
        stay out of a group whose coordinator forgot it (a broker restarted)."""
        if self._assigned_at is None or now - self._assigned_at < self._rejoin_after:
            return
        log.warning(
            "this ingester lost its partitions %.0fs ago and has not got any back; "
            "rejoining the group", now - self._assigned_at,
        )  # fmt: skip
        self._assigned_at = None
        self._reset_consumer()

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at < 5.0:
            return
        self._lag_at = now
        try:
            self.metrics.set_lag(self.group, self.topic, self.bus.lag(self.group, self.topic))
        except BackendUnavailableError as exc:
            log.debug("cannot read the bus lag: %s", exc)

    def _key(self, tp: TopicPartition) -> str:
        return f"{self._prefix}{tp[1]}"


def run_stream(
    project: Project,
    *,
    group: str = DEFAULT_GROUP,
    source: str | None = None,
    stop: threading.Event | None = None,
    idle_exit: float | None = None,
    metrics: IngestMetrics | None = None,
    max_events: int | None = None,
    max_wait: timedelta | None = None,
    on_batch: Callable[[StreamReport], None] | None = None,
) -> StreamReport:
    """Run an ingester for the project's bus and lake until stopped.

    >>> run_stream(project, idle_exit=5.0).counts.accepted    # doctest: +SKIP
    """
    from clickloop.bus.base import open_bus
    from clickloop.lake.lake import open_lake

    cfg = project.config
    bus = open_bus(project)
    lake = open_lake(project)
    bus_name = (
        "local" if cfg.bus.type == "local" else f"kafka:{getattr(cfg.bus, 'topic_prefix', '')}"
    )
    try:
        ing = StreamIngester(
            lake,
            bus,
            group=group,
            source=source,
            bus_name=bus_name,
            max_events=max_events or cfg.ingest.batch_max_events,
            max_wait=max_wait or cfg.ingest.batch_max_wait,
            max_future=cfg.ingest.max_future,
            metrics=metrics,
        )
        try:
            return ing.run(stop, idle_exit=idle_exit, on_batch=on_batch)
        finally:
            ing.close()
    finally:
        lake.close()
        bus.close()
