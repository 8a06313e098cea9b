"""The raw lake as a user sees it: what goes in comes out, once, in its event-date partition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from clickloop.errors import ConflictError, UsageError
from clickloop.lake import Lake, rejects_table
from tests.unit.lake.helpers import T0, make_events


def _ids(table: pa.Table) -> list[str]:
    return sorted(table.column("event_id").to_pylist())


def test_appended_events_read_back_identically(lake: Lake):
    events = make_events(500, step=timedelta(minutes=7))  # spans ~2.4 days
    result = lake.append_events(events, source="sim")
    assert result.counts["sim"].accepted == 500
    back = lake.events().to_table().sort_by("event_id")
    assert back.equals(events.sort_by("event_id"))


def test_events_land_in_their_event_date_partition(lake: Lake):
    late = make_events(3, start=T0 + timedelta(days=2), prefix="late")
    early = make_events(3, start=T0, prefix="early")
    lake.append_events(pa.concat_tables([late, early]))
    dts = {e.dt: e.rows for e in lake.files("events")}
    assert dts == {"2026-11-01": 3, "2026-11-03": 3}
    paths = sorted(e.path for e in lake.files("events"))
    assert paths[0].startswith("raw/events/dt=2026-11-01/")


def test_a_time_range_returns_exactly_the_events_inside_it(lake: Lake):
    lake.append_events(make_events(600, step=timedelta(minutes=10)))  # 100 hours
    start, end = T0 + timedelta(hours=30), T0 + timedelta(hours=50)
    got = lake.events(start, end).to_table()
    assert got.num_rows == 120
    assert pc.min(got.column("ts")).as_py() == start
    assert pc.max(got.column("ts")).as_py() < end
    rel = lake.events_relation(duckdb.connect(), start, end)
    assert rel.aggregate("count(*)").fetchall() == [(120,)]
    assert lake.events("2026-11-02", "2026-11-03").count_rows() == 144


def test_columns_narrow_what_is_read(lake: Lake):
    lake.append_events(make_events(10))
    assert lake.events(columns=["user_id"]).schema.names == ["user_id"]
    assert lake.events(T0, columns=["user_id"]).schema.names == ["user_id", "ts"]
    rel = lake.events_relation(duckdb.connect(), columns=["event_id", "type"])
    assert rel.columns == ["event_id", "type"]
    with pytest.raises(UsageError, match="nope"):
        lake.events(columns=["nope"])


def test_reading_streams_batches_instead_of_loading_everything(lake: Lake):
    for day in range(3):
        lake.append_events(make_events(100, start=T0 + timedelta(days=day), prefix=f"d{day}-"))
    dataset = lake.events()
    sizes = [b.num_rows for b in dataset.to_batches(batch_size=50)]
    assert sum(sizes) == 300 and max(sizes) <= 50


def test_an_empty_lake_reads_as_empty(lake: Lake):
    assert lake.events().to_table().num_rows == 0
    assert lake.events_relation(duckdb.connect()).aggregate("count(*)").fetchall() == [(0,)]
    assert lake.stats()["events"]["rows"] == 0


def test_duplicates_within_the_horizon_are_dropped_and_counted(lake: Lake):
    events = make_events(50)
    lake.append_events(events, source="a")
    mixed = pa.concat_tables([events.slice(0, 10), make_events(5, prefix="n")])
    again = lake.append_events(mixed, source="b")
    assert again.counts["b"].duplicates == 10 and again.counts["b"].accepted == 5
    assert lake.events().count_rows() == 55
    totals = lake.totals()
    assert totals["a"].balanced and totals["b"].balanced


def test_duplicates_inside_one_batch_keep_the_first(lake: Lake):
    events = make_events(4)
    twice = pa.concat_tables([events, events.slice(1, 2)])
    result = lake.append_events(twice)
    assert result.counts["append"].accepted == 4 and result.counts["append"].duplicates == 2
    assert _ids(lake.events().to_table()) == ["e0", "e1", "e2", "e3"]


def test_an_id_reused_beyond_the_horizon_is_a_new_event(tmp_path):
    lake = Lake.open(str(tmp_path / "lake"), dedupe_horizon=timedelta(days=1))
    first = make_events(1)
    much_later = make_events(1, start=T0 + timedelta(days=3))
    lake.append_events(first)
    assert lake.append_events(much_later).counts["append"].accepted == 1
    assert (
        lake.append_events(make_events(1, start=T0 + timedelta(hours=20)))
        .counts["append"]
        .duplicates
        == 1
    )
    assert lake.events().count_rows() == 2


def test_uncommitted_work_is_invisible_and_leaves_nothing(lake: Lake):
    writer = lake.writer()
    txn = writer.begin("files")
    txn.add_events(make_events(10))
    txn.add_rejects(rejects_table([b"{"], ["unparseable"], ["not JSON"], "files", T0))
    assert lake.events().count_rows() == 0
    txn.abort()
    assert lake.events().count_rows() == 0 and lake.quarantine().count_rows() == 0
    assert not [f for top in ("raw", "quarantine", "_index") for f in lake.storage.walk_files(top)]
    writer.close()


def test_quarantine_keeps_the_payload_and_counts_by_reason(lake: Lake):
    writer = lake.writer()
    with writer.begin("files", "ingest-batch") as txn:
        txn.add_events(make_events(3))
        rejects = rejects_table(
            [b"{oops", b"[1]"],
            ["unparseable", "not_an_object"],
            ["x", "y"],
            "files",
            T0 + timedelta(days=5),
            ["a.jsonl:4", "a.jsonl:9"],
        )
        txn.add_rejects(rejects)
        txn.commit()
    q = lake.quarantine().to_table()
    assert q.column("payload").to_pylist() == [b"{oops", b"[1]"]
    assert lake.files("quarantine")[0].dt == "2026-11-06"  # arrival date
    stats = lake.stats()
    assert stats["sources"]["files"]["quarantined"] == {"not_an_object": 1, "unparseable": 1}
    assert stats["sources"]["files"]["received"] == 5 and stats["total"]["balanced"]
    writer.close()


def test_a_concurrent_writer_that_commits_first_wins_the_duplicates(lake: Lake):
    slow = lake.writer()
    txn = slow.begin("slow")
    txn.add_events(make_events(20))
    fast = Lake.open(lake.url) if not lake.storage.local else Lake.open(lake.storage.root)
    fast.append_events(make_events(10, offset=10), source="fast")  # e10..e19 first
    result = txn.commit()
    assert result.retries == 1
    assert result.counts["slow"].accepted == 10 and result.counts["slow"].duplicates == 10
    assert _ids(lake.events().to_table()) == sorted(f"e{i}" for i in range(20))
    assert all(c.balanced for c in lake.totals().values())
    slow.close()
    fast.close()


def test_a_checkpoint_moved_by_another_writer_refuses_the_commit(lake: Lake):
    w1, w2 = lake.writer(), lake.writer()
    t1 = w1.begin("s")
    t1.add_events(make_events(2))
    t1.checkpoint("stream:p0", 10, expect=None)
    t2 = w2.begin("s")
    t2.checkpoint("stream:p0", 12, expect=None)
    t2.commit()
    with pytest.raises(ConflictError, match="stream:p0"):
        t1.commit()
    assert lake.events().count_rows() == 0
    assert lake.refresh().checkpoints["stream:p0"] == 12
    w1.close()
    w2.close()


def test_a_new_reader_sees_the_same_state_after_many_commits(lake: Lake):
    for i in range(105):
        lake.append_events(make_events(1, prefix=f"c{i}-"))
    fresh = Lake.open(lake.url) if not lake.storage.local else Lake.open(lake.storage.root)
    assert fresh.refresh().version == 105
    assert fresh.events().count_rows() == 105
    assert lake.storage.exists("_log/00000000000000000100.checkpoint.json")


def test_stats_report_partitions_rows_and_newest_times(lake: Lake):
    lake.append_events(make_events(48, step=timedelta(hours=1)), source="sim")
    s = lake.stats()
    assert s["events"]["partitions"] == 2 and s["events"]["rows"] == 48
    assert s["events"]["newest_event"] == "2026-11-02T23:00:00.000Z"
    assert s["events"]["newest_arrival"] == "2026-11-02T23:00:01.000Z"
    assert s["sources"]["sim"]["accepted"] == 48


def test_append_events_refuses_what_is_not_an_event(lake: Lake):
    with pytest.raises(UsageError, match="missing column"):
        lake.append_events(pa.table({"x": [1]}))
    bad = make_events(2).set_column(0, "event_id", pa.array([None, "a"], pa.string()))
    with pytest.raises(UsageError, match="event_id"):
        lake.append_events(bad)


def test_time_bounds_accept_dates_strings_and_naive_datetimes(lake: Lake):
    lake.append_events(make_events(48, step=timedelta(hours=1)))
    assert lake.events("2026-11-02").count_rows() == 24
    assert lake.events(datetime(2026, 11, 2)).count_rows() == 24
    assert lake.events(end=datetime(2026, 11, 2, tzinfo=UTC).date()).count_rows() == 24
    with pytest.raises(UsageError, match="not a time"):
        lake.events("yesterday")


def test_a_batch_over_several_days_with_duplicates_lands_once_and_dedupes_later(lake: Lake):
    import pyarrow.parquet as pq

    from clickloop.lake.idindex import decode_sidecar, id_hash

    events = make_events(300, step=timedelta(minutes=29))  # ~6 days, interleaved below
    shuffled = events.take(pa.array([(i * 7) % 300 for i in range(300)]))
    batch = pa.concat_tables([shuffled, events.slice(40, 25)])  # in-batch repeats
    result = lake.append_events(batch, source="a")
    assert result.counts["a"].accepted == 300 and result.counts["a"].duplicates == 25
    back = lake.events().to_table()
    assert back.sort_by("event_id").equals(events.sort_by("event_id"))
    storage = lake.storage
    for entry in lake.files("events"):
        table = pq.read_table(storage.path(entry.path), filesystem=lake.arrow_fs)
        assert table.num_rows == entry.rows > 0
        assert {t.date().isoformat() for t in table.column("ts").to_pylist()} == {entry.dt}
        # the dedupe sidecar lists exactly the file's ids, sorted by hash
        h, t = decode_sidecar(storage.read(entry.ids), entry.ids)
        assert (h[1:] >= h[:-1]).all()
        ids = id_hash(table.column("event_id")).tolist()
        want = sorted(zip(ids, table.column("ts").cast(pa.int64()).to_pylist(), strict=True))
        assert sorted(zip(h.tolist(), t.tolist(), strict=True)) == want
    fresh = Lake.open(lake.url)  # a new writer dedupes against those sidecars
    again = fresh.append_events(events.slice(100, 50), source="b")
    assert again.counts["b"].duplicates == 50
    fresh.close()
