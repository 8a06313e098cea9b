"""Processes for the local bus's multi-process tests: ``python -m tests.unit.bus.workers MODE …``.

produce DIR TAG COUNT ACKS   publish COUNT records (COUNT=0: forever) in batches; after each
                             publish returns, append the number acknowledged so far to ACKS
tear DIR TAG COUNT ACKS      publish COUNT records, then die by SIGKILL half-way through the
                             write of the next batch (a torn tail made on purpose)
consume DIR GROUP OUT        consume "events" forever; append each value to OUT, then commit
"""

from __future__ import annotations

import hashlib
import sys

from clickloop.bus.local import LocalBus
from clickloop.config.infra import LocalBusConfig

BATCH = 200


def payload(tag: str, i: int) -> bytes:
    """A value whose integrity the reader can check: tag, sequence number, derived filler."""
    filler = hashlib.sha256(f"{tag}:{i}".encode()).hexdigest().encode() * 40  # 2.5 KiB
    return f"{tag}:{i}:".encode() + filler


def check(value: bytes) -> tuple[str, int]:
    tag, i, _ = value.split(b":", 2)
    assert value == payload(tag.decode(), int(i)), "a record's bytes were damaged"
    return tag.decode(), int(i)


def config(**kw: object) -> LocalBusConfig:
    return LocalBusConfig(partitions=3, session_timeout="2s", **kw)  # type: ignore[arg-type]


def produce(path: str, tag: str, count: int, acks: str) -> None:
    producer = LocalBus(path, config()).producer()
    sent = 0
    with open(acks, "a") as out:
        while count == 0 or sent < count:
            n = BATCH if count == 0 else min(BATCH, count - sent)
            producer.publish(
                "events",
                [(b"key-%d" % ((sent + j) % 10), payload(tag, sent + j)) for j in range(n)],
            )
            sent += n
            out.write(f"{sent}\n")
            out.flush()


def tear(path: str, tag: str, count: int, acks: str) -> None:
    import os
    import signal

    from clickloop.bus import log

    produce(path, tag, count, acks)
    real = os.pwritev

    def half_then_die(fd: int, buffers: list[bytes], offset: int) -> int:
        data = b"".join(buffers)
        real(fd, [data[: len(data) // 2]], offset)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    log.os.pwritev = half_then_die  # type: ignore[attr-defined]
    producer = LocalBus(path, config()).producer()
    producer.publish("events", [(b"key-%d" % j, payload(tag, count + j)) for j in range(BATCH)])


def consume(path: str, group: str, out_path: str) -> None:
    consumer = LocalBus(path, config()).consumer(group, ["events"])
    with open(out_path, "ab") as out:
        while True:
            batch = consumer.poll(max_messages=100, timeout=0.2)
            if not batch:
                continue
            out.write(
                b"".join(
                    b"%s:%d\n" % (check(m.value)[0].encode(), check(m.value)[1]) for m in batch
                )
            )
            out.flush()
            ends: dict[tuple[str, int], int] = {}
            for m in batch:
                ends[(m.topic, m.partition)] = m.offset + 1
            consumer.commit(ends)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "produce":
        produce(args[0], args[1], int(args[2]), args[3])
    elif mode == "tear":
        tear(args[0], args[1], int(args[2]), args[3])
    elif mode == "consume":
        consume(args[0], args[1], args[2])
    else:
        raise SystemExit(f"unknown mode {mode}")
