"""The event bus: durable topics with partitions, offsets and consumer groups.

Two backends implement this interface — the embedded durable log (default; no
server; survives kill -9) and Apache Kafka — and one contract suite
(``tests/contract/test_bus.py``) runs against both.

Semantics every backend guarantees:

* :meth:`Producer.publish` returns only once every record is durable (local:
  written and flushed per ``fsync``; Kafka: acknowledged by all in-sync
  replicas). If it raises, none or some of the records may be durable — the
  caller retries, and consumers dedupe by ``event_id``.
* A record's partition is chosen from its key (same key → same partition, so
  one user's events stay in order); records without a key are spread over the
  partitions (Kafka: "sticky", one partition per short batching window).
* Offsets are per (topic, partition), dense, starting at 0.
* Consumers in one group share a topic's partitions; each partition is read by
  exactly one member at a time; membership changes rebalance.
* :meth:`Consumer.commit` stores, per (topic, partition), the *next* offset to
  read; a new member of the group resumes there (a group that never committed
  starts at the oldest record kept).
* A commit is all-or-nothing and only for partitions the member owns *at the
  moment of the commit*: if any partition in it was handed to another member
  by a rebalance, nothing is stored and :class:`PartitionsRevokedError` names
  the lost partitions (with Kafka, when the rebalance raced the commit itself,
  all the partitions of that commit). Their records are delivered again to the new owner
  from the last committed offset, so a caller drops its pending work for them
  (or keeps it, deduplicated by ``event_id``) and may commit the others again.
* Consumers are used from one thread; producers may be shared by threads.

Message format on the ``events`` topic: one JSON object per message (UTF-8),
canonical field names (``event_id``, ``ts``, ``received_at``, ``type``,
``user_id``, ``session_id``, ``url``, ``referrer``, ``props``), times as
ISO-8601 strings; key = ``user_id`` (UTF-8). Producers outside clickloop may
publish too, so consumers validate every message like any other input.

>>> bus = open_bus(project)                                  # doctest: +SKIP
>>> bus.producer().publish("events", [(b"u1", b'{"event_id": "e1", ...}')])
>>> c = bus.consumer("lake-ingest", ["events"])
>>> batch = c.poll(max_messages=10_000, timeout=1.0)
>>> c.commit({(m.topic, m.partition): m.offset + 1 for m in batch})
>>> cols = c.poll_batch(max_messages=50_000, timeout=1.0)   # column-wise, for throughput
>>> c.commit(cols.next_offsets())
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from clickloop.bus.batch import Message, MessageBatch
from clickloop.errors import ConflictError, UsageError

__all__ = [  # Message and MessageBatch live in clickloop.bus.batch; importable from here too
    "TOPICS",
    "Bus",
    "Consumer",
    "Message",
    "MessageBatch",
    "PartitionsRevokedError",
    "Producer",
    "TopicPartition",
    "check_offsets",
    "open_bus",
]

if TYPE_CHECKING:
    from clickloop.project import Project

TOPICS: Final = ("events", "exposures", "predictions")

TopicPartition = tuple[str, int]


class PartitionsRevokedError(ConflictError):
    """A commit named partitions this consumer no longer owns; nothing was committed.

    ``partitions`` lists the lost ones. Happens after a rebalance (a member
    joined or left) or when this member was expelled for missing heartbeats.
    """

    code = "partitions_revoked"

    def __init__(self, group: str, partitions: Sequence[TopicPartition]) -> None:
        names = ", ".join(f"{t}/{p}" for t, p in partitions)
        super().__init__(
            f"consumer group {group!r}: commit refused, partitions {names} are no longer "
            "assigned to this consumer",
            hint="their records will be redelivered to the new owner; drop the pending work "
            "for them and commit the other partitions again",
            group=group,
            partitions=[f"{t}/{p}" for t, p in partitions],
        )
        self.group = group
        self.partitions = list(partitions)


def check_offsets(
    group: str, topics: Sequence[str], offsets: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Validate the argument of :meth:`Consumer.commit` (a :class:`UsageError` if malformed)."""
    clean: dict[TopicPartition, int] = {}
    for tp, off in offsets.items():
        try:
            topic, part = tp
        except (TypeError, ValueError):
            raise UsageError(f"commit keys are (topic, partition) pairs, got {tp!r}") from None
        if topic not in topics or not isinstance(part, int) or part < 0:
            raise UsageError(
                f"cannot commit {topic!r} partition {part!r}: this consumer of group "
                f"{group!r} reads {', '.join(topics)}"
            )
        if not isinstance(off, int) or isinstance(off, bool) or off < 0:
            raise UsageError(
                "commit offsets are integers >= 0 (the next offset to read), "
                f"got {off!r} for {topic}/{part}"
            )
        clean[(topic, part)] = off
    return clean


class Producer(ABC):
    @abstractmethod
    def publish(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Append ``(key, value)`` records; return when all are durable."""

    @abstractmethod
    def close(self) -> None: ...


class Consumer(ABC):
    @abstractmethod
    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to ``max_messages`` from the assigned partitions, waiting at most ``timeout`` s.

        Returns as soon as some messages are available (it does not wait to
        fill ``max_messages``); an empty list when none came within ``timeout``.
        Per partition, messages come in offset order.
        """

    def poll_batch(self, max_messages: int, timeout: float) -> MessageBatch:
        """:meth:`poll`, column-wise: the same messages, semantics and waiting, as a
        :class:`MessageBatch` (values as a list of bytes, partitions and offsets as
        numpy arrays) — for consumers of many messages per second, which then build a
        :class:`Message` only for the few they need one for.

        Backends override it to skip the per-message objects; this default wraps
        :meth:`poll`. Calls to both may be mixed: each message is delivered once.
        """
        return MessageBatch.from_messages(self.poll(max_messages, timeout))

    @abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Durably record the next offset to read for each (topic, partition).

        Raises :class:`PartitionsRevokedError` (and stores nothing) if any of
        them is no longer assigned to this consumer.
        """

    @abstractmethod
    def committed(self) -> dict[TopicPartition, int]:
        """The group's committed offsets for this member's assigned partitions."""

    @abstractmethod
    def assignment(self) -> list[TopicPartition]: ...

    @abstractmethod
    def close(self) -> None: ...


class Bus(ABC):
    @abstractmethod
    def producer(self) -> Producer: ...

    @abstractmethod
    def consumer(self, group: str, topics: Sequence[str]) -> Consumer: ...

    @abstractmethod
    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next appended record will get."""

    @abstractmethod
    def committed_offsets(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, the group's committed offset (0 when none)."""

    def lag(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, records appended but not yet committed by ``group``."""
        ends = self.end_offsets(topic)
        done = self.committed_offsets(group, topic)
        return {p: max(0, end - done.get(p, 0)) for p, end in ends.items()}

    @abstractmethod
    def close(self) -> None: ...


def open_bus(project: Project) -> Bus:
    """The bus the project configures (``bus.type``)."""
    from clickloop.config.infra import KafkaBusConfig

    cfg = project.config.bus
    if isinstance(cfg, KafkaBusConfig):
        from clickloop.bus.kafka import KafkaBus

        return KafkaBus(cfg)
    from clickloop.bus.local import LocalBus

    path = project.resolve_path(cfg.path) if cfg.path else project.state_path("bus")
    return LocalBus(path, cfg)
