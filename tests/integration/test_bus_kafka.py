"""The Kafka bus against a real broker (Tansu): restarts, an unreachable broker, backpressure.

These tests stop and restart the broker, so they run a private Tansu rather than the
session's ``kafka_server`` (other tests keep their topics).

Tansu runs on memory storage here: a restart loses its topics, committed offsets and
producer state. What is asserted is what a user sees from clickloop: producers and
consumers that were open across the restart carry on by themselves — the topic is
created again, the producer replaces a client the broker no longer knows, the consumer
rejoins its group — and all traffic published after the restart arrives. (With a Kafka
cluster, data written before the restart is kept as well.)
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest

from clickloop.bus import PartitionsRevokedError
from clickloop.bus.kafka import KafkaBus, client_config
from clickloop.config.infra import KafkaBusConfig
from clickloop.errors import BackendUnavailableError, OverloadedError
from clickloop.testing.servers import KafkaServer

pytestmark = pytest.mark.integration


@pytest.fixture
def broker() -> Iterator[KafkaServer]:
    with KafkaServer() as server:
        yield server


def config(bootstrap: str, **kw) -> KafkaBusConfig:
    return KafkaBusConfig(
        type="kafka",
        bootstrap=bootstrap,
        topic_prefix=f"r{uuid.uuid4().hex[:8]}.",
        partitions=2,
        session_timeout="6s",
        **kw,
    )


def test_producer_and_consumer_recover_by_themselves_after_a_broker_restart(broker):
    bus = KafkaBus(config(broker.bootstrap, delivery_timeout="45s"))
    producer = bus.producer()
    consumer = bus.consumer("lake", ["events"])
    producer.publish("events", [(b"u%d" % i, b"before-%d" % i) for i in range(50)])
    seen: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(seen) < 50 and time.monotonic() < deadline:
        batch = consumer.poll(max_messages=100, timeout=0.5)
        seen += [m.value for m in batch]
        if batch:
            consumer.commit({(m.topic, m.partition): m.offset + 1 for m in batch})
    assert len(seen) == 50

    broker.restart()
    # the consumer keeps polling through the restart: it loses its partitions while its
    # topic does not exist, and must get them back by itself once the topic is there again
    # (and lag is read meanwhile, as the ingester's metrics do, while the broker is away)
    got: set[bytes] = set()
    until = time.monotonic() + 4
    while time.monotonic() < until:
        got.update(m.value for m in consumer.poll(max_messages=100, timeout=0.5))
        with contextlib.suppress(BackendUnavailableError):
            bus.lag("lake", "events")

    after = [b"after-%d" % i for i in range(50)]
    t0 = time.monotonic()
    producer.publish("events", [(b"u%d" % i, v) for i, v in enumerate(after)])
    assert time.monotonic() - t0 < 45
    committed = False
    deadline = time.monotonic() + 90
    while not (set(after) <= got and committed) and time.monotonic() < deadline:
        batch = consumer.poll(max_messages=100, timeout=0.5)
        got.update(m.value for m in batch)
        if batch:
            try:
                consumer.commit({(m.topic, m.partition): m.offset + 1 for m in batch})
                committed = True
            except PartitionsRevokedError:
                pass  # the group is re-forming after the restart; the records come again
    assert set(after) <= got, f"missing after restart: {sorted(set(after) - got)[:5]}"
    assert committed, "commits work again after the restart"
    assert sum(bus.end_offsets("events").values()) > 0
    # reading offsets works again too (a stuck admin client would time out on every call)
    slow = 0
    for _ in range(3):
        t0 = time.monotonic()
        with contextlib.suppress(BackendUnavailableError):
            bus.lag("lake", "events")
        slow += time.monotonic() - t0 > 5
    assert slow <= 1
    consumer.close()
    producer.close()


def test_publish_to_an_unreachable_broker_fails_clearly_within_the_delivery_timeout(broker):
    bus = KafkaBus(config(broker.bootstrap, delivery_timeout="3s"))
    producer = bus.producer()
    producer.publish("events", [(b"k", b"v")])
    broker.kill()
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        producer.publish("events", [(b"k", b"lost?")])
    assert time.monotonic() - t0 < 20
    assert broker.bootstrap in str(info.value)
    assert "retry" in (info.value.hint or "")


def test_a_full_local_queue_is_backpressure_not_an_unbounded_buffer(broker):
    cfg = config(
        broker.bootstrap, delivery_timeout="4s", client={"queue.buffering.max.messages": 20}
    )
    bus = KafkaBus(cfg)
    producer = bus.producer()
    producer.publish("events", [(b"k", b"warm-up")])
    broker.kill()
    with pytest.raises(OverloadedError) as info:
        producer.publish("events", [(b"k%d" % i, b"v") for i in range(500)])
    assert info.value.retry_after > 0
    assert "queue" in str(info.value)


def test_security_settings_reach_the_client_and_secrets_stay_out_of_repr():
    cfg = KafkaBusConfig(
        type="kafka",
        bootstrap="k1:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="clickloop",
        sasl_password="s3cr3t-pw",
        client={"ssl.ca.location": "/etc/ca.pem", "sasl.oauthbearer.client.secret": "xyz"},
    )
    conf = client_config(cfg)
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "s3cr3t-pw"
    assert conf["sasl.oauthbearer.client.secret"] == "xyz"
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert "s3cr3t-pw" not in repr(cfg) and "xyz" not in repr(cfg)


def test_open_bus_reads_the_kafka_section_of_the_project(tmp_path, kafka_server):
    from clickloop.bus import open_bus
    from clickloop.project import Project

    prefix = f"p{uuid.uuid4().hex[:6]}."
    (tmp_path / "clickloop.yaml").write_text(
        "bus: {type: kafka, bootstrap: '${KB}', topic_prefix: '${KP}', partitions: 3,\n"
        "      session_timeout: 6s}\n"
    )
    bus = open_bus(Project.load(tmp_path, env={"KB": kafka_server.bootstrap, "KP": prefix}))
    assert isinstance(bus, KafkaBus)
    bus.producer().publish("exposures", [(b"u1", b"{}")])
    assert bus.partitions("exposures") == 3
    assert bus.topic_name("exposures") == prefix + "exposures"
    assert sum(bus.end_offsets("exposures").values()) == 1
    bus.close()
