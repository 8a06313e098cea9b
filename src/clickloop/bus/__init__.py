"""Event bus: the embedded durable log (default) and Apache Kafka behind one interface."""

from clickloop.bus.base import (
    TOPICS,
    Bus,
    Consumer,
    Message,
    MessageBatch,
    PartitionsRevokedError,
    Producer,
    TopicPartition,
    open_bus,
)

__all__ = [
    "TOPICS",
    "Bus",
    "Consumer",
    "Message",
    "MessageBatch",
    "PartitionsRevokedError",
    "Producer",
    "TopicPartition",
    "open_bus",
]
