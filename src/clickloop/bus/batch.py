"""Column-wise poll results: :class:`MessageBatch`, what :meth:`Consumer.poll_batch` returns.

A consumer that reads hundreds of thousands of messages per second spends more
time building one Python object per message than anything else it does with
them; a batch holds the same messages as columns instead — the values as a
list of bytes, partitions and offsets as numpy arrays — and builds a
:class:`~clickloop.bus.base.Message` only for the few a caller asks about
(a record to quarantine, say). Keys and timestamps, which most consumers never
read, are loaded on first access.

>>> batch = consumer.poll_batch(max_messages=50_000, timeout=1.0)   # doctest: +SKIP
>>> events = parse(batch.values)                                    # doctest: +SKIP
>>> consumer.commit(batch.next_offsets())                           # doctest: +SKIP
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

from clickloop.errors import UsageError

TopicPartition = tuple[str, int]


class Message(NamedTuple):
    """One record read from the bus (immutable; a named tuple because consumers make
    hundreds of thousands per second and a frozen dataclass costs three times as much)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int  # local log: when it was appended; Kafka: the record's timestamp


Extras = Callable[[], tuple[list[bytes | None], np.ndarray]]  # → (keys, timestamps_ms)


class MessageBatch:
    """Messages of one poll, column-wise; per (topic, partition) in offset order.

    Columns (all of length ``len(batch)``): ``values`` (list of bytes),
    ``partitions`` (int32), ``offsets`` (int64), ``topic_ids`` (uint16 indexes
    into ``topics``, the batch's distinct topic names), and, loaded on first
    access, ``keys`` (bytes or None) and ``timestamps_ms`` (int64). Iterating
    yields :class:`~clickloop.bus.base.Message` objects (built on the way).

    >>> b = MessageBatch([b"a", b"b"], np.array([0, 1]), np.array([7, 3]), topics=("events",))
    >>> b.next_offsets()
    {('events', 0): 8, ('events', 1): 4}
    >>> b[1].offset, b.origin(1)
    (3, 'events/1@3')
    """

    __slots__ = (
        "_extras",
        "_keys",
        "_timestamps",
        "offsets",
        "partitions",
        "topic_ids",
        "topics",
        "values",
    )

    def __init__(
        self,
        values: list[bytes],
        partitions: np.ndarray | Sequence[int],
        offsets: np.ndarray | Sequence[int],
        *,
        topics: tuple[str, ...],
        topic_ids: np.ndarray | None = None,
        keys: list[bytes | None] | None = None,
        timestamps_ms: np.ndarray | None = None,
        extras: Extras | None = None,
    ) -> None:
        n = len(values)
        self.values = values
        self.partitions = np.asarray(partitions, dtype=np.int32)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.topics = tuple(topics)
        if topic_ids is None:
            if len(self.topics) > 1:
                raise UsageError("a batch of several topics needs topic_ids")
            topic_ids = np.zeros(n, dtype=np.uint16)
        self.topic_ids = np.asarray(topic_ids, dtype=np.uint16)
        if not n == len(self.partitions) == len(self.offsets) == len(self.topic_ids):
            raise UsageError(
                f"batch columns differ in length: {n} values, {len(self.partitions)} "
                f"partitions, {len(self.offsets)} offsets, {len(self.topic_ids)} topic ids"
            )
        if n and not self.topics:
            raise UsageError("a non-empty batch needs its topic names")
        self._keys = keys
        self._timestamps = timestamps_ms
        if (keys is None or timestamps_ms is None) and extras is None:
            none: list[bytes | None] = [None] * n
            zeros = np.zeros(n, dtype=np.int64)
            self._keys = none if keys is None else keys
            self._timestamps = zeros if timestamps_ms is None else timestamps_ms
        self._extras = extras

    # -- construction --------------------------------------------------------------------

    @classmethod
    def empty(cls) -> MessageBatch:
        return cls([], np.empty(0, np.int32), np.empty(0, np.int64), topics=())

    @classmethod
    def from_messages(cls, messages: Sequence[Message]) -> MessageBatch:
        """The batch of ``messages`` (what the default :meth:`Consumer.poll_batch` does)."""
        if not messages:
            return cls.empty()
        names: dict[str, int] = {}
        ids = [names.setdefault(m.topic, len(names)) for m in messages]
        return cls(
            [m.value for m in messages],
            np.fromiter((m.partition for m in messages), np.int32, len(messages)),
            np.fromiter((m.offset for m in messages), np.int64, len(messages)),
            topics=tuple(names),
            topic_ids=np.array(ids, dtype=np.uint16),
            keys=[m.key for m in messages],
            timestamps_ms=np.fromiter((m.timestamp_ms for m in messages), np.int64, len(messages)),
        )

    @classmethod
    def concat(cls, batches: Sequence[MessageBatch]) -> MessageBatch:
        """One batch of ``batches`` in order (keys and timestamps stay lazy)."""
        parts = [b for b in batches if len(b)]
        if len(parts) <= 1:
            return parts[0] if parts else cls.empty()
        topics = parts[0].topics
        if all(b.topics == topics for b in parts):
            ids = np.concatenate([b.topic_ids for b in parts])
        else:
            union: dict[str, int] = {}
            for b in parts:
                for t in b.topics:
                    union.setdefault(t, len(union))
            topics = tuple(union)
            ids = np.concatenate(
                [np.array([union[t] for t in b.topics], np.uint16)[b.topic_ids] for b in parts]
            )

        def extras() -> tuple[list[bytes | None], np.ndarray]:
            keys = list(itertools.chain.from_iterable(b.keys for b in parts))
            return keys, np.concatenate([b.timestamps_ms for b in parts])

        return cls(
            list(itertools.chain.from_iterable(b.values for b in parts)),
            np.concatenate([b.partitions for b in parts]),
            np.concatenate([b.offsets for b in parts]),
            topics=topics,
            topic_ids=ids,
            extras=extras,
        )

    def take(self, indices: np.ndarray | Sequence[int]) -> MessageBatch:
        """The messages at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.intp)
        pick = idx.tolist()
        get = self.values.__getitem__

        def extras() -> tuple[list[bytes | None], np.ndarray]:
            keys = self.keys
            return [keys[i] for i in pick], self.timestamps_ms[idx]

        return MessageBatch(
            list(map(get, pick)),
            self.partitions[idx],
            self.offsets[idx],
            topics=self.topics,
            topic_ids=self.topic_ids[idx],
            extras=extras,
        )

    # -- lazy columns --------------------------------------------------------------------

    def _load(self) -> None:
        assert self._extras is not None
        keys, stamps = self._extras()
        self._keys, self._timestamps, self._extras = keys, np.asarray(stamps, np.int64), None

    @property
    def keys(self) -> list[bytes | None]:
        if self._keys is None:
            self._load()
        assert self._keys is not None
        return self._keys

    @property
    def timestamps_ms(self) -> np.ndarray:
        if self._timestamps is None:
            self._load()
        assert self._timestamps is not None
        return self._timestamps

    # -- access --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"<MessageBatch of {len(self)} from {', '.join(self.topics) or 'nowhere'}>"

    def topic(self, i: int) -> str:
        return self.topics[int(self.topic_ids[i])]

    def origin(self, i: int) -> str:
        """Where message ``i`` came from: ``topic/partition@offset``."""
        return f"{self.topic(i)}/{int(self.partitions[i])}@{int(self.offsets[i])}"

    def __getitem__(self, i: int) -> Message:
        if not isinstance(i, int | np.integer):
            raise UsageError(f"a batch is indexed by position, got {i!r}; use take() for many")
        return Message(
            self.topic(i),
            int(self.partitions[i]),
            int(self.offsets[i]),
            self.keys[i],
            self.values[i],
            int(self.timestamps_ms[i]),
        )

    def __iter__(self) -> Iterator[Message]:
        return (self[i] for i in range(len(self)))

    def _codes(self) -> np.ndarray:
        return (self.topic_ids.astype(np.int64) << 32) | self.partitions.astype(np.int64)

    def _tp(self, code: int) -> TopicPartition:
        return (self.topics[code >> 32], code & 0xFFFFFFFF)

    def by_partition(self) -> dict[TopicPartition, np.ndarray]:
        """Positions of each (topic, partition)'s messages, ascending (so in offset order)."""
        if not len(self):
            return {}
        codes = self._codes()
        if codes[0] == codes[-1] and (codes == codes[0]).all():  # one partition: no sort
            return {self._tp(int(codes[0])): np.arange(len(self))}
        order = np.argsort(codes, kind="stable")
        uniq, starts = np.unique(codes[order], return_index=True)
        return {
            self._tp(int(c)): part
            for c, part in zip(uniq.tolist(), np.split(order, starts[1:]), strict=True)
        }

    def last_positions(self) -> dict[TopicPartition, int]:
        """Per (topic, partition), the position of its highest-offset message."""
        if not len(self):
            return {}
        codes = self._codes()
        order = np.lexsort((self.offsets, codes))
        sorted_codes = codes[order]
        last = np.flatnonzero(np.append(sorted_codes[1:] != sorted_codes[:-1], True))
        return {
            self._tp(int(c)): int(p)
            for c, p in zip(sorted_codes[last].tolist(), order[last].tolist(), strict=True)
        }

    def next_offsets(self) -> dict[TopicPartition, int]:
        """What to :meth:`~clickloop.bus.base.Consumer.commit` once the batch is handled."""
        offsets = self.offsets
        return {tp: int(offsets[p]) + 1 for tp, p in self.last_positions().items()}

    def to_messages(self) -> list[Message]:
        return list(self)


__all__ = ["Message", "MessageBatch"]
