"""The stream ingester on the embedded bus: every message in the lake once, whatever happens."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clickloop.bus.local import LocalBus
from clickloop.config.infra import LocalBusConfig
from clickloop.ingest.batch import BatchImport
from clickloop.ingest.files import discover
from clickloop.ingest.stream import StreamIngester
from clickloop.lake import Lake

T0 = datetime(2026, 11, 1, tzinfo=UTC)
EPOCH_MS = 1793491200000  # T0 in epoch milliseconds


def _bus(path: Path, partitions: int = 3) -> LocalBus:
    cfg = LocalBusConfig(partitions=partitions, session_timeout=timedelta(seconds=2))
    return LocalBus(path, cfg)


def _event(i: int, *, ts: datetime | None = None, user: str | None = None) -> dict:
    t = ts or T0 + timedelta(seconds=i)
    return {
        "event_id": f"e{i}",
        "ts": t.isoformat(),
        "received_at": (t + timedelta(seconds=1)).isoformat(),
        "type": "page_view",
        "user_id": user or f"u{i % 5}",
        "url": f"https://shop.example.com/items/1/{i}",
        "props": {"n": i},
    }


def _publish(bus: LocalBus, values: list[bytes], keys: list[bytes | None] | None = None) -> None:
    keys = keys or [None] * len(values)
    bus.producer().publish("events", list(zip(keys, values, strict=True)))


def _drain(ing: StreamIngester) -> None:
    """Run until a poll returns nothing (the batch in progress is committed)."""
    ing._writer = ing.lake.writer()
    try:
        while ing.step():
            pass
        ing.flush()
    finally:
        ing._writer.close()
        ing._writer = None
        ing._reset_consumer()  # leave the group


def _ids(lake: Lake) -> list[str]:
    return sorted(lake.events(columns=["event_id"]).to_table().column("event_id").to_pylist())


@pytest.fixture
def setup(tmp_path: Path):
    bus = _bus(tmp_path / "bus")
    lake = Lake.open(str(tmp_path / "lake"))
    yield bus, lake
    bus.close()
    lake.close()


def _ingester(bus, lake, **kw) -> StreamIngester:
    kw.setdefault("max_wait", timedelta(milliseconds=200))
    return StreamIngester(lake, bus, bus_name="local", **kw)


def test_published_events_land_once_with_bad_messages_quarantined(setup):
    bus, lake = setup
    good = [orjson.dumps(_event(i)) for i in range(200)]
    bad = [b"{not json", b"[1, 2]", orjson.dumps({**_event(999), "ts": "yesterday"}), b""]
    future = orjson.dumps(
        {**_event(1000), "ts": (T0 + timedelta(days=3)).isoformat(), "received_at": T0.isoformat()}
    )
    _publish(bus, good + bad + [future] + good[:10])
    ing = _ingester(bus, lake, max_events=64)
    _drain(ing)
    assert _ids(lake) == sorted(f"e{i}" for i in range(200))
    totals = lake.stats()["sources"]["bus:events"]
    assert totals["received"] == 215 and totals["duplicates"] == 10 and totals["balanced"]
    assert totals["quarantined"] == {
        "bad_ts": 1,
        "not_an_object": 1,
        "ts_in_future": 1,
        "unparseable": 2,
    }
    payloads = lake.quarantine().to_table().column("payload").to_pylist()
    assert b"{not json" in payloads and b"" in payloads
    origins = lake.quarantine().to_table().column("origin").to_pylist()
    assert all(o.startswith("events/") and "@" in o for o in origins)
    assert ing.report.batches >= 4  # bounded by max_events


def test_late_events_land_in_their_event_date_partition(setup):
    bus, lake = setup
    late = _event(1, ts=T0 - timedelta(days=2, hours=3))
    _publish(bus, [orjson.dumps(_event(0)), orjson.dumps(late)])
    _drain(_ingester(bus, lake))
    assert sorted(e.dt for e in lake.files()) == ["2026-10-29", "2026-11-01"]


def test_a_crash_between_lake_and_bus_commit_redelivers_and_skips(setup, monkeypatch):
    bus, lake = setup
    _publish(bus, [orjson.dumps(_event(i)) for i in range(100)])
    first = _ingester(bus, lake)
    monkeypatch.setattr(first, "_commit_bus", lambda consumer, offsets: None)  # "crashed"
    _drain(first)
    assert lake.events().count_rows() == 100
    assert sum(bus.lag(first.group, "events").values()) == 100  # nothing acknowledged
    monkeypatch.undo()
    second = _ingester(bus, lake)
    _drain(second)
    assert second.report.skipped == 100 and second.report.counts.received == 0
    assert sum(bus.lag(second.group, "events").values()) == 0
    assert lake.stats()["total"]["received"] == 100 and lake.events().count_rows() == 100


def test_a_bus_log_that_restarted_below_the_checkpoint_loses_nothing(tmp_path):
    lake = Lake.open(str(tmp_path / "lake"))
    old = _bus(tmp_path / "bus-a", partitions=1)
    _publish(old, [orjson.dumps(_event(i)) for i in range(50)])
    _drain(_ingester(old, lake))
    old.close()
    fresh = _bus(tmp_path / "bus-b", partitions=1)  # same name, a new log: offsets from 0
    _publish(fresh, [orjson.dumps(_event(i)) for i in range(100, 130)])
    ing = _ingester(fresh, lake)
    _drain(ing)
    assert ing.report.resets == 1
    assert _ids(lake) == sorted([f"e{i}" for i in range(50)] + [f"e{i}" for i in range(100, 130)])
    fresh.close()


def test_a_commit_for_a_partition_another_member_advanced_is_dropped(setup):
    bus, lake = setup
    _publish(bus, [orjson.dumps(_event(i)) for i in range(30)], [b"u"] * 30)
    ing = _ingester(bus, lake)
    ing._writer = lake.writer()
    consumer = ing._open()
    batch = ing._poll(consumer, None)
    (tp,) = {(m.topic, m.partition) for m in batch}
    # meanwhile another member of the group commits this partition further
    with lake.writer() as other, other.begin("bus:events", "ingest-stream") as txn:
        txn.checkpoint(ing._key(tp), {"next": 30, "last": "x"}, expect=None)
        txn.commit()
    ing._inflight = ing._submit(batch, {ing._key(tp): None})
    ing.flush()
    assert ing.report.conflicts == 1 and lake.events().count_rows() == 0
    ing._writer.close()
    ing._reset_consumer()


def test_two_ingesters_in_one_group_share_the_partitions(tmp_path):
    bus = _bus(tmp_path / "bus", partitions=4)
    lake = Lake.open(str(tmp_path / "lake"))
    values = [orjson.dumps(_event(i, user=f"u{i % 40}")) for i in range(2000)]
    _publish(bus, values, [f"u{i % 40}".encode() for i in range(2000)])
    reports = []

    def member() -> None:
        ing = StreamIngester(
            Lake.open(str(tmp_path / "lake")), bus, bus_name="local", max_events=100,
            max_wait=timedelta(milliseconds=100),
        )  # fmt: skip
        reports.append(ing.run(threading.Event(), idle_exit=3.0))
        ing.close()

    threads = [threading.Thread(target=member) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert _ids(lake) == sorted(f"e{i}" for i in range(2000))
    assert sum(r.counts.received for r in reports) == 2000
    assert lake.stats()["total"]["duplicates"] == 0
    bus.close()


records = st.lists(
    st.one_of(
        st.integers(0, 30).map(lambda i: orjson.dumps(_event(i))),
        st.integers(0, 30).map(lambda i: orjson.dumps({**_event(i), "url": "not a url"})),
        st.integers(0, 30).map(lambda i: orjson.dumps({**_event(i), "ts": i * 1000 + EPOCH_MS})),
        st.sampled_from([b"{broken", b"[]", b"null", b'"s"']),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records)
def test_stream_and_batch_give_the_same_lake(tmp_path_factory, recs):
    root = tmp_path_factory.mktemp("parity")
    (root / "in.jsonl").write_bytes(b"\n".join(recs) + b"\n")
    by_batch = Lake.open(str(root / "batch"))
    BatchImport(by_batch, source="x").run(discover([str(root / "in.jsonl")]))
    bus = _bus(root / "bus", partitions=1)
    _publish(bus, recs)
    by_stream = Lake.open(str(root / "stream"))
    _drain(_ingester(bus, by_stream, source="x"))
    bus.close()

    def content(lake: Lake):
        events = lake.events().to_table().sort_by("event_id")
        reasons = sorted(lake.quarantine().to_table().column("reason").to_pylist())
        return events.drop_columns(["received_at"]).to_pylist(), reasons

    assert content(by_batch) == content(by_stream)
    a, b = by_batch.totals()["x"], by_stream.totals()["x"]
    assert (a.received, a.accepted, a.duplicates, a.quarantined) == (
        b.received, b.accepted, b.duplicates, b.quarantined,
    )  # fmt: skip


def test_each_quarantined_record_names_its_own_partition_and_offset(setup):
    """With several parse workers and partitions, an origin points at exactly its payload."""
    bus, lake = setup
    values, keys = [], []
    for i in range(3000):
        bad = i % 97 == 5
        values.append(f"{{broken {i}".encode() if bad else orjson.dumps(_event(i)))
        keys.append(f"u{i % 11}".encode())
    _publish(bus, values, keys)
    _drain(_ingester(bus, lake, max_events=700, workers=3))
    where: dict[str, bytes] = {}
    consumer = bus.consumer("audit", ["events"])
    while batch := consumer.poll(10_000, 0.5):
        where.update({f"{m.topic}/{m.partition}@{m.offset}": m.value for m in batch})
    consumer.close()
    q = lake.quarantine().to_table()
    rows = list(zip(q.column("origin").to_pylist(), q.column("payload").to_pylist(), strict=True))
    assert len(rows) == sum(1 for i in range(3000) if i % 97 == 5)
    assert len({o for o, _ in rows}) == len(rows)
    for origin, payload in rows:
        assert where[origin] == payload, origin
