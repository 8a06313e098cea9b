"""The Kafka bus's consumer: a consumer-group member through confluent-kafka.

Commits are synchronous and refused (:class:`~clickloop.bus.base.PartitionsRevokedError`)
for partitions not assigned to it any more — checked before the commit, and
reported by the coordinator when a rebalance raced it. :meth:`KafkaConsumer.poll_batch`
reads the client's messages column-wise, without a Python object per message of
its own (the hot path of the stream ingester).

>>> c = KafkaBus(config).consumer("lake-ingest", ["events"])   # doctest: +SKIP
>>> batch = c.poll_batch(max_messages=50_000, timeout=1.0)
>>> c.commit(batch.next_offsets())
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import numpy as np

from clickloop.bus.base import (
    Consumer,
    Message,
    MessageBatch,
    PartitionsRevokedError,
    TopicPartition,
    check_offsets,
)
from clickloop.bus.kafka import REQUEST_TIMEOUT, KafkaBus, _error_of, _unavailable, client_config
from clickloop.config.base import reveal
from clickloop.errors import BackendUnavailableError, UsageError

log = logging.getLogger(__name__)

_WARN_EVERY: Final = 10.0
WATCH_EVERY: Final = 2.0  # while a consumer has no partitions, how often it checks its topics

T = TypeVar("T", list[Message], MessageBatch)


class KafkaConsumer(Consumer):
    """A consumer-group member; use it from one thread."""

    def __init__(self, bus: KafkaBus, group: str, topics: list[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        cfg = bus.config
        session_ms = int(cfg.session_timeout.total_seconds() * 1000)
        conf = {
            **client_config(cfg),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, session_ms // 4),
            "topic.metadata.refresh.interval.ms": 10_000,
            "allow.auto.create.topics": False,
        }
        conf.update(reveal(cfg.client))
        self._names = [bus.ensure_topic(t) for t in topics]
        self._c = bus._k.Consumer(conf)
        self._kmsg = bus._k.Message  # its C methods, mapped over a batch's messages
        self._c.subscribe(self._names)
        self._warned: dict[int, float] = {}
        self._logical: dict[str, str] = {}
        self._recreated = 0.0
        self._watched = time.monotonic()
        self._vanished = False
        self._closed = False

    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        return self._fetch(max_messages, timeout, self._convert)

    def poll_batch(self, max_messages: int, timeout: float) -> MessageBatch:
        return self._fetch(max_messages, timeout, self._columns)

    def _fetch(self, max_messages: int, timeout: float, convert: Callable[[list[Any]], T]) -> T:
        if self._closed:
            raise UsageError("poll on a closed consumer")
        if max_messages < 1 or timeout < 0:
            raise UsageError(
                f"poll needs max_messages >= 1 and timeout >= 0, got {max_messages}, {timeout}"
            )
        deadline = time.monotonic() + timeout
        self._watch()
        while True:
            raw = self._c.consume(max_messages, 0)
            if not raw:
                left = deadline - time.monotonic()
                if left <= 0:
                    return convert([])
                first = self._c.poll(left)  # wait for the first message, not for a full batch
                if first is None:
                    return convert([])
                raw = [first]
                if max_messages > 1:
                    raw += self._c.consume(max_messages - 1, 0)
            out = convert(raw)
            if len(out) or time.monotonic() >= deadline:
                return out

    def _watch(self) -> None:
        """Rejoin by itself when its topics vanished and came back (seen with no partitions).

        librdkafka rejoins when a subscribed topic changes partition count, but not
        always when one is deleted and created again with the same count (a broker
        restarted on memory storage, an operator's re-creation): the member then
        idles with no partitions. While it has none, every few seconds: create the
        topics if they are missing, and once they are back, subscribe again.
        """
        if self._c.assignment():
            self._vanished = False
            return
        now = time.monotonic()
        if now - self._watched < WATCH_EVERY:
            return
        self._watched = now
        try:
            missing = [t for t in self.topics if self.bus._describe(self.bus.topic_name(t)) is None]
            if missing:
                self._vanished = True
                for t in missing:
                    self.bus.ensure_topic(t, recheck=True)
            elif self._vanished:
                log.info(
                    "Kafka consumer of group %r: its topics were re-created; rejoining", self.group
                )
                self._vanished = False
                self._c.unsubscribe()
                self._c.subscribe(self._names)
        except BackendUnavailableError as exc:
            log.debug("Kafka consumer of group %r: topic check failed: %s", self.group, exc)

    def _convert(self, raw: list[Any]) -> list[Message]:
        out: list[Message] = []
        append = out.append
        names = self._logical
        new = tuple.__new__  # skips the named tuple's Python-level __new__: hot path
        for m in raw:
            err = m.error()
            if err is not None:
                self._on_error(err, m)
                continue
            topic = m.topic()
            name = names.get(topic)
            if name is None:
                name = names[topic] = self.bus.logical(topic)
            append(
                new(
                    Message,
                    (name, m.partition(), m.offset(), m.key(), m.value() or b"", m.timestamp()[1]),
                )
            )
        return out

    def _columns(self, raw: list[Any]) -> MessageBatch:
        """The client's messages as a batch: each field read for all messages at once
        through the C method (``map(Message.value, raw)``), no Python object per message."""
        if not raw:
            return MessageBatch.empty()
        kmsg = self._kmsg
        errors = list(map(kmsg.error, raw))
        if errors.count(None) != len(errors):
            for m, err in zip(raw, errors, strict=True):
                if err is not None:
                    self._on_error(err, m)
            raw = [m for m, err in zip(raw, errors, strict=True) if err is None]
            if not raw:
                return MessageBatch.empty()
        n = len(raw)
        values = list(map(kmsg.value, raw))
        if None in values:  # a null value (a tombstone) reads as empty, as in poll()
            values = [v or b"" for v in values]
        names = self._logical
        if len(self._names) == 1:  # one subscribed topic: every message is from it
            name = self._names[0]
            topics: tuple[str, ...] = (names.get(name) or self._name_of(name),)
            ids = None
        else:
            index: dict[str, int] = {}
            ids = np.fromiter(
                (index.setdefault(t, len(index)) for t in map(kmsg.topic, raw)), np.uint16, n
            )
            topics = tuple(names.get(t) or self._name_of(t) for t in index)

        def extras() -> tuple[list[bytes | None], np.ndarray]:
            stamps = np.fromiter((ts for _, ts in map(kmsg.timestamp, raw)), np.int64, n)
            return list(map(kmsg.key, raw)), stamps

        return MessageBatch(
            values,
            np.fromiter(map(kmsg.partition, raw), np.int32, n),
            np.fromiter(map(kmsg.offset, raw), np.int64, n),
            topics=topics,
            topic_ids=ids,
            extras=extras,
        )

    def _name_of(self, topic: str) -> str:
        name = self._logical[topic] = self.bus.logical(topic)
        return name

    def _on_error(self, err: Any, m: Any) -> None:
        kerr = self.bus._k.KafkaError
        if err.code() == kerr._PARTITION_EOF:
            return
        if err.fatal():
            raise BackendUnavailableError(
                f"Kafka consumer of group {self.group!r} failed: {err.str()}",
                hint="close this consumer and open a new one",
            )
        now = time.monotonic()
        if now - self._warned.get(err.code(), 0.0) > _WARN_EVERY:
            self._warned[err.code()] = now
            log.warning("Kafka consumer of group %r: %s", self.group, err.str())
        if err.code() in (kerr.UNKNOWN_TOPIC_OR_PART, kerr._UNKNOWN_TOPIC):
            # a topic vanished (e.g. a broker restarted on memory storage): create it again
            if now - self._recreated < 2.0:
                return
            self._recreated = now
            for t in self.topics:
                try:
                    self.bus.ensure_topic(t, recheck=True)
                except BackendUnavailableError as exc:
                    log.warning("Kafka: cannot re-create topic %r yet: %s", t, exc)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self._closed:
            raise UsageError("commit on a closed consumer")
        clean = check_offsets(self.group, self.topics, offsets)
        if not clean:
            return
        k = self.bus._k
        mine = {(tp.topic, tp.partition) for tp in self._c.assignment()}
        name = self.bus.topic_name
        revoked = sorted(tp for tp in clean if (name(tp[0]), tp[1]) not in mine)
        if revoked:
            raise PartitionsRevokedError(self.group, revoked)
        tps = [k.TopicPartition(name(t), p, o) for (t, p), o in clean.items()]
        try:
            result = self._c.commit(offsets=tps, asynchronous=False)
        except k.KafkaException as exc:
            self._commit_failed(_error_of(exc), sorted(clean), exc)
            return
        for tp in result or []:
            if tp.error is not None:
                self._commit_failed(tp.error, sorted(clean), tp.error)

    def _commit_failed(self, err: Any, tps: list[TopicPartition], exc: Any) -> None:
        kerr = self.bus._k.KafkaError
        fenced = (
            kerr.REBALANCE_IN_PROGRESS,
            kerr.ILLEGAL_GENERATION,
            kerr.UNKNOWN_MEMBER_ID,
            kerr.FENCED_INSTANCE_ID,
            kerr._ASSIGNMENT_LOST,
        )
        if err is not None and err.code() in fenced:
            raise PartitionsRevokedError(self.group, tps)
        raise BackendUnavailableError(
            f"Kafka consumer of group {self.group!r}: commit failed: {exc}",
            hint="nothing was committed; the records will be delivered again",
        )

    def committed(self) -> dict[TopicPartition, int]:
        tps = self._c.assignment()
        if not tps:
            return {}
        k = self.bus._k
        try:
            got = self._c.committed(
                [k.TopicPartition(tp.topic, tp.partition) for tp in tps], timeout=REQUEST_TIMEOUT
            )
        except k.KafkaException as exc:
            raise _unavailable(
                f"cannot read group {self.group!r}'s offsets", self.bus.config, exc
            ) from exc
        return {(self.bus.logical(tp.topic), tp.partition): max(0, tp.offset) for tp in got}

    def assignment(self) -> list[TopicPartition]:
        return sorted((self.bus.logical(tp.topic), tp.partition) for tp in self._c.assignment())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._c.close()
