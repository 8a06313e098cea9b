"""The Kafka bus: Apache Kafka (or a Kafka-compatible broker) through confluent-kafka.

* Producer: ``acks=all`` with idempotence; :meth:`KafkaProducer.publish`
  returns only once every record's delivery report succeeded. Records that
  failed in a retriable way are sent again (through a fresh client if the old
  one is wedged, e.g. a broker that lost its producer state) until
  ``delivery_timeout``; then :class:`~clickloop.errors.BackendUnavailableError`.
  A local queue that stays full raises :class:`~clickloop.errors.OverloadedError`.
  Keys are partitioned with murmur2, like the Java client, so other producers
  of the same topics agree on where a user's events go.
* Consumer (:mod:`clickloop.bus.kafka_consumer`): a group member with
  ``enable.auto.commit=false``; commits are synchronous, and refused
  (:class:`~clickloop.bus.base.PartitionsRevokedError`) for partitions not
  assigned to it any more — checked before the commit, and reported by the
  coordinator when a rebalance raced it.
* Topics (``topic_prefix`` + ``events``/``exposures``/``predictions``) are
  created with ``partitions``/``replication`` when missing, and created again if
  they vanish (a broker restarted on memory storage).

Security settings (``security_protocol``, ``sasl_*``) and any librdkafka
setting under ``client`` reach the clients; secrets are revealed to them only.
librdkafka's own log lines go to the ``clickloop.bus.kafka.librdkafka`` logger.

>>> bus = KafkaBus(KafkaBusConfig(type="kafka", bootstrap="k1:9092"))   # doctest: +SKIP
>>> bus.producer().publish("events", [(b"u1", b'{"event_id": "e1"}')])
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from clickloop.bus.base import Bus, Producer
from clickloop.config.base import reveal
from clickloop.config.infra import KafkaBusConfig
from clickloop.errors import (
    BackendUnavailableError,
    OverloadedError,
    PayloadTooLargeError,
    UsageError,
    require,
)

if TYPE_CHECKING:
    from clickloop.bus.kafka_consumer import KafkaConsumer

log = logging.getLogger(__name__)
rdlog = logging.getLogger(__name__ + ".librdkafka")

REQUEST_TIMEOUT: Final = 10.0  # admin and metadata calls
QUEUE_FULL_WAIT: Final = 5.0  # a full local queue with no delivery progress this long → overloaded


def _kafka() -> Any:
    return require("confluent_kafka", "kafka", feature="the Kafka bus")


def client_config(cfg: KafkaBusConfig) -> dict[str, Any]:
    """Settings shared by every client: brokers, security, the user's extra options."""
    conf: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap,
        "security.protocol": cfg.security_protocol,
        "client.id": "clickloop",
        "logger": rdlog,
    }
    if cfg.sasl_mechanism:
        conf["sasl.mechanism"] = cfg.sasl_mechanism
    if cfg.sasl_username:
        conf["sasl.username"] = cfg.sasl_username
    if cfg.sasl_password:
        conf["sasl.password"] = cfg.sasl_password.get_secret_value()
    conf.update(reveal(cfg.client))
    return conf


def _unavailable(what: str, cfg: KafkaBusConfig, exc: BaseException) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"Kafka at {cfg.bootstrap}: {what}: {exc}",
        hint="check bus.bootstrap, the security settings and that the brokers are up",
    )


def _error_of(exc: BaseException) -> Any:
    """The KafkaError inside a KafkaException (or None)."""
    return exc.args[0] if exc.args and hasattr(exc.args[0], "code") else None


class KafkaBus(Bus):
    """Kafka behind the bus interface (see the module documentation)."""

    def __init__(self, config: KafkaBusConfig) -> None:
        self.config = config
        self._k = _kafka()
        admin_mod = require("confluent_kafka.admin", "kafka", feature="the Kafka bus")
        self._admin_mod = admin_mod
        self._admin_conf = {**client_config(config), "allow.auto.create.topics": False}
        self._admin = admin_mod.AdminClient(self._admin_conf)
        self._topics: dict[str, int] = {}  # full topic name → partitions, known to exist
        self._lock = threading.Lock()
        self._admin_lock = threading.Lock()

    def _admin_failed(self, what: str, admin: Any, exc: BaseException) -> BackendUnavailableError:
        """The error to raise; a client that timed out is replaced for the next call.

        A long-lived admin client can stay stuck after its broker restarted (every
        group-offset request times out, while a new client succeeds at once).
        """
        err = _error_of(exc)
        kerr = self._k.KafkaError
        if err is not None and err.code() in (kerr._TIMED_OUT, kerr._TRANSPORT):
            with self._admin_lock:  # not self._lock: ensure_topic holds it while calling
                if admin is self._admin:
                    self._admin = self._admin_mod.AdminClient(self._admin_conf)
                    log.info("Kafka admin client replaced after: %s", err.str())
        return _unavailable(what, self.config, exc)

    # -- topics ------------------------------------------------------------------------

    def topic_name(self, topic: str) -> str:
        """The broker's name for a bus topic (``topic_prefix`` + topic)."""
        if not isinstance(topic, str) or not topic:
            raise UsageError(f"invalid topic name {topic!r}")
        return self.config.topic_prefix + topic

    def logical(self, name: str) -> str:
        return name[len(self.config.topic_prefix) :]

    def ensure_topic(self, topic: str, *, recheck: bool = False) -> str:
        """Create the topic if it does not exist; return its full name."""
        name = self.topic_name(topic)
        if not recheck and name in self._topics:
            return name
        with self._lock:
            n = self._describe(name)
            if n is None:
                self._create(name)
                n = self._wait_for(name)
            self._topics[name] = n
        return name

    def forget_topic(self, topic: str) -> None:
        self._topics.pop(self.topic_name(topic), None)

    def partitions(self, topic: str) -> int:
        name = self.ensure_topic(topic)
        return self._topics[name]

    def _describe(self, name: str) -> int | None:
        """Partitions of an existing topic whose partitions all have a leader, else None."""
        admin = self._admin
        try:
            md = admin.list_topics(topic=name, timeout=REQUEST_TIMEOUT)
        except self._k.KafkaException as exc:
            raise self._admin_failed("cannot read metadata", admin, exc) from exc
        t = md.topics.get(name)
        if t is None or t.error is not None or not t.partitions:
            return None
        if any(p.leader < 0 for p in t.partitions.values()):
            return None
        return len(t.partitions)

    def _create(self, name: str) -> None:
        new = self._admin_mod.NewTopic(
            name,
            num_partitions=self.config.partitions,
            replication_factor=self.config.replication,
        )
        admin = self._admin
        try:
            admin.create_topics([new], request_timeout=REQUEST_TIMEOUT)[name].result()
            log.info(
                "created Kafka topic %r (%d partitions, replication %d)",
                name,
                self.config.partitions,
                self.config.replication,
            )
        except self._k.KafkaException as exc:
            err = _error_of(exc)
            if err is not None and err.code() in (
                self._k.KafkaError._TIMED_OUT,
                self._k.KafkaError._TRANSPORT,
            ):
                raise self._admin_failed(f"cannot create topic {name!r}", admin, exc) from exc
            if err is None or err.code() != self._k.KafkaError.TOPIC_ALREADY_EXISTS:
                raise BackendUnavailableError(
                    f"cannot create Kafka topic {name!r} at {self.config.bootstrap}: {exc}",
                    hint="create it yourself (partitions, replication) or grant the "
                    "CREATE permission to clickloop's principal",
                ) from exc

    def _wait_for(self, name: str) -> int:
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while True:
            n = self._describe(name)
            if n is not None:
                return n
            if time.monotonic() > deadline:
                raise BackendUnavailableError(
                    f"Kafka topic {name!r} has no leader for every partition after "
                    f"{REQUEST_TIMEOUT:g} s",
                    hint="check the brokers' health",
                )
            time.sleep(0.1)

    # -- Bus ---------------------------------------------------------------------------

    def producer(self) -> KafkaProducer:
        return KafkaProducer(self)

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        """A member of ``group``; partitions are assigned inside :meth:`KafkaConsumer.poll`."""
        from clickloop.bus.kafka_consumer import KafkaConsumer

        if not isinstance(group, str) or not group:
            raise UsageError(f"invalid group name {group!r}")
        if isinstance(topics, str) or not topics:
            raise UsageError(
                f"a consumer needs a list of topics, got {topics!r}",
                hint='e.g. bus.consumer("lake-ingest", ["events"])',
            )
        return KafkaConsumer(self, group, list(dict.fromkeys(topics)))

    def end_offsets(self, topic: str) -> dict[int, int]:
        name = self.ensure_topic(topic)
        tp_cls = self._k.TopicPartition
        spec = self._admin_mod.OffsetSpec.latest()
        req = {tp_cls(name, p): spec for p in range(self._topics[name])}
        admin = self._admin
        try:
            futs = admin.list_offsets(req, request_timeout=REQUEST_TIMEOUT)
            return {tp.partition: int(f.result().offset) for tp, f in futs.items()}
        except self._k.KafkaException as exc:
            raise self._admin_failed(
                f"cannot list the end offsets of {name!r}", admin, exc
            ) from exc

    def committed_offsets(self, group: str, topic: str) -> dict[int, int]:
        name = self.ensure_topic(topic)
        tps = [self._k.TopicPartition(name, p) for p in range(self._topics[name])]
        req = self._k.ConsumerGroupTopicPartitions(group, tps)
        admin = self._admin
        try:
            (fut,) = admin.list_consumer_group_offsets(
                [req], request_timeout=REQUEST_TIMEOUT
            ).values()
            got = fut.result().topic_partitions
        except self._k.KafkaException as exc:
            raise self._admin_failed(f"cannot read group {group!r}'s offsets", admin, exc) from exc
        return {tp.partition: max(0, int(tp.offset)) for tp in got}

    def close(self) -> None:
        self._topics.clear()


@dataclass
class _Delivery:
    """Failed deliveries of one publish call (``delivery.report.only.error``: no news is good)."""

    failed: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)

    def report(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed.append((msg.key(), msg.value()))
            self.errors.append(err)


class KafkaProducer(Producer):
    """Publishes with acks=all and idempotence.

    Thread-safe; concurrent :meth:`publish` calls on one producer take turns
    (each waits for its own acknowledgements), so use one producer per thread
    to publish in parallel.
    """

    def __init__(self, bus: KafkaBus) -> None:
        self.bus = bus
        cfg = bus.config
        self.timeout = cfg.delivery_timeout.total_seconds()
        self.queue_full_wait = min(QUEUE_FULL_WAIT, self.timeout / 2)
        attempt_ms = int(max(1.0, min(self.timeout, max(5.0, self.timeout / 3))) * 1000)
        self._conf = {
            **client_config(cfg),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "message.timeout.ms": attempt_ms,
            "delivery.report.only.error": True,
            "allow.auto.create.topics": False,
        }
        self._conf.update(reveal(cfg.client))  # the user's settings win
        self._turn = threading.Lock()
        self._producer = bus._k.Producer(self._conf)
        self._closed = False

    def publish(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Send ``records``; return when the brokers acknowledged every one of them."""
        if self._closed:
            raise UsageError("publish on a closed producer")
        if not records:
            return
        with self._turn:
            self._publish(topic, records)

    def _publish(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        deadline = time.monotonic() + self.timeout
        pending = records
        name = self.bus.ensure_topic(topic)
        last: Any = None
        while True:
            client = self._producer
            state = self._send(client, name, pending)
            left = client.flush(max(0.0, deadline - time.monotonic()))
            if left:
                raise BackendUnavailableError(
                    f"Kafka at {self.bus.config.bootstrap} did not acknowledge {left} of "
                    f"{len(records)} records for topic {name!r} within {self.timeout:g} s",
                    hint="retry; some records may have been stored (consumers deduplicate)",
                )
            if not state.failed:
                return
            last = state.errors[0]
            for err in state.errors:
                if err.code() == self.bus._k.KafkaError.MSG_SIZE_TOO_LARGE:
                    raise PayloadTooLargeError(
                        f"Kafka refused a record for topic {name!r}: {err.str()}",
                        hint="raise the topic's max.message.bytes or publish smaller records",
                    )
                if not (err.retriable() or self._retry_after(err)):
                    raise BackendUnavailableError(
                        f"Kafka refused {len(state.failed)} of {len(records)} records for "
                        f"topic {name!r}: {err.str()}",
                        hint="check the broker logs and the topic's configuration",
                    )
            if time.monotonic() >= deadline:
                break
            log.warning(
                "Kafka: %d records for %r failed (%s); sending them again",
                len(state.failed),
                name,
                last.str(),
            )
            self._reset(client)
            pending = state.failed
            try:
                name = self.bus.ensure_topic(topic, recheck=True)
            except BackendUnavailableError:
                time.sleep(0.5)
        raise BackendUnavailableError(
            f"Kafka at {self.bus.config.bootstrap} did not store {len(pending)} of "
            f"{len(records)} records for topic {name!r} within {self.timeout:g} s: {last.str()}",
            hint="retry; some records may have been stored (consumers deduplicate)",
        )

    def _retry_after(self, err: Any) -> bool:
        """Errors that a fresh client (new producer id, fresh metadata) can get past."""
        kerr = self.bus._k.KafkaError
        return bool(
            err.code()
            in (
                kerr._MSG_TIMED_OUT,
                kerr._TRANSPORT,
                kerr.UNKNOWN_TOPIC_OR_PART,
                kerr._UNKNOWN_TOPIC,
                kerr._UNKNOWN_PARTITION,
                kerr.UNKNOWN_PRODUCER_ID,
                kerr.OUT_OF_ORDER_SEQUENCE_NUMBER,
                kerr.INVALID_PRODUCER_EPOCH,
                kerr._FATAL,
            )
            or err.fatal()
        )

    def _send(
        self, client: Any, name: str, records: Sequence[tuple[bytes | None, bytes]]
    ) -> _Delivery:
        state = _Delivery()
        report = state.report
        produce = client.produce
        for i, rec in enumerate(records):
            try:
                key, value = rec
            except (TypeError, ValueError):
                raise UsageError(
                    "bus records must be (key, value) pairs of bytes (key may be None)"
                ) from None
            stalled_since: float | None = None
            while True:
                try:
                    produce(name, value, key, on_delivery=report)
                    break
                except BufferError:
                    # the local queue is full: serve delivery reports to make room
                    queued = len(client)
                    client.poll(0.05)
                    now = time.monotonic()
                    if len(client) < queued or stalled_since is None:
                        stalled_since = now
                    elif now - stalled_since > self.queue_full_wait:
                        raise OverloadedError(
                            f"the Kafka producer's local queue stayed full for "
                            f"{self.queue_full_wait:g} s ({i} of {len(records)} records queued)",
                            retry_after=self.queue_full_wait,
                            hint="the brokers are slower than the input; retry later",
                        ) from None
                except TypeError as exc:
                    raise UsageError(
                        f"bus records must be (key, value) pairs of bytes: {exc}"
                    ) from None
                except self.bus._k.KafkaException as exc:
                    err = _error_of(exc)
                    if err is not None and err.code() == self.bus._k.KafkaError.MSG_SIZE_TOO_LARGE:
                        raise PayloadTooLargeError(
                            f"a record of {len(value):,} bytes is larger than the producer's "
                            "message.max.bytes",
                            hint="publish smaller records or raise message.max.bytes "
                            "(bus.client) and the topic's max.message.bytes",
                        ) from exc
                    raise _unavailable("produce failed", self.bus.config, exc) from exc
        return state

    def _reset(self, client: Any) -> None:
        """Replace a client that may be wedged (e.g. a broker that forgot its producer id)."""
        self._producer = self.bus._k.Producer(self._conf)
        log.info("Kafka producer client replaced after failed deliveries")
        try:  # the old client's leftovers fail fast instead of lingering
            client.purge()
            client.flush(0)
        except Exception:  # best effort on a client being discarded
            log.debug("purging the old Kafka producer failed", exc_info=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._turn:
            self._producer.flush(self.timeout)
