"""One contract for every online store backend: SQLite (embedded) and Redis (a real server).

Each test gets fresh storage: a temporary SQLite file, or a unique key prefix on the
session's redis-server. ``harness.open()`` opens another store object on the same
storage (a restart, or another process).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clickloop.errors import InvalidInputError, UsageError
from clickloop.stores.base import CHUNK_ROWS, OnlineStore

NOW = datetime.now(UTC).replace(microsecond=0)
TS = pa.timestamp("us", "UTC")


class Harness:
    kind = ""

    def __init__(self) -> None:
        self.stores: list[OnlineStore] = []

    def open(self) -> OnlineStore:
        store = self._make()
        self.stores.append(store)
        return store

    def _make(self) -> OnlineStore:
        raise NotImplementedError

    def close(self) -> None:
        for s in self.stores:
            s.close()


class SqliteHarness(Harness):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _make(self) -> OnlineStore:
        from clickloop.stores.sqlite import SqliteOnlineStore

        return SqliteOnlineStore(self.path)


class RedisHarness(Harness):
    kind = "redis"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.prefix = f"t{uuid.uuid4().hex[:10]}:"

    def _make(self) -> OnlineStore:
        from clickloop.stores.redis import RedisOnlineStore

        return RedisOnlineStore(self.url, key_prefix=self.prefix)

    def close(self) -> None:
        import redis

        super().close()
        client = redis.Redis.from_url(self.url)
        keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
        if keys:
            client.unlink(*keys)
        client.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "sqlite":
        h: Harness = SqliteHarness(tmp_path / "online.sqlite")
    else:
        h = RedisHarness(request.getfixturevalue("redis_server").url)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def store(harness: Harness) -> OnlineStore:
    return harness.open()


def rows(entities: list[str], ts: list[datetime] | datetime = NOW, **features: Any) -> pa.Table:
    times = ts if isinstance(ts, list) else [ts] * len(entities)
    cols: dict[str, Any] = {"entity": pa.array(entities), "_event_ts": pa.array(times, TS)}
    cols.update(features)
    return pa.table(cols)


def same(a: Any, b: Any) -> bool:
    """Equal values of exactly the same types (NaN equals NaN), recursively."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


# -- values ------------------------------------------------------------------------------

TYPED_COLUMNS: dict[str, pa.Array] = {
    "i8": pa.array([-128, 127, None], pa.int8()),
    "u64": pa.array([0, 2**64 - 1, None], pa.uint64()),
    "i64": pa.array([-(2**63), 2**63 - 1, None], pa.int64()),
    "f64": pa.array([float("nan"), float("-inf"), None], pa.float64()),
    "f64b": pa.array([-0.0, 1.0, 1e-300], pa.float64()),
    "f32": pa.array([0.1, float("inf"), None], pa.float32()),
    "flag": pa.array([True, False, None]),
    "text": pa.array(['quote " and \\ and\nnewline', "ünïcødé ✓ \x00\x1f", None]),
    "large": pa.array(["big", "", None], pa.large_string()),
    "dict": pa.array(["a", "b", None]).dictionary_encode(),
    "when": pa.array([NOW, datetime(1950, 1, 1, tzinfo=UTC), None], TS),
    "naive": pa.array([datetime(2020, 5, 6, 7, 8, 9, 123456), None, None], pa.timestamp("us")),
    "ns": pa.array([1_700_000_000_123_456_000, None, 0], pa.timestamp("ns", "UTC")),
    "day": pa.array([date(2026, 1, 31), date(1900, 1, 1), None]),
    "since": pa.array([timedelta(seconds=90), timedelta(microseconds=-1), None]),
    "top": pa.array([["books", "games"], [], None]),
    "floats": pa.array([[1.0, 2.5, None], [float("nan")], None]),
    "hist": pa.array([[("clothes", 3), ("books", 1)], [], None], pa.map_(pa.string(), pa.int64())),
    "pair": pa.array([{"k": "x", "n": 1}, {"k": None, "n": None}, None]),
    "nested": pa.array([[[1, 2], []], None, [None]]),
    "nothing": pa.nulls(3),
}
EXPECTED: dict[str, list[Any]] = {
    "i8": [-128, 127, None],
    "u64": [0, 2**64 - 1, None],
    "i64": [-(2**63), 2**63 - 1, None],
    "f64": [float("nan"), float("-inf"), None],
    "f64b": [-0.0, 1.0, 1e-300],
    "f32": [0.10000000149011612, float("inf"), None],
    "flag": [True, False, None],
    "text": ['quote " and \\ and\nnewline', "ünïcødé ✓ \x00\x1f", None],
    "large": ["big", "", None],
    "dict": ["a", "b", None],
    "when": [NOW, datetime(1950, 1, 1, tzinfo=UTC), None],
    "naive": [datetime(2020, 5, 6, 7, 8, 9, 123456), None, None],
    "ns": [
        datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC),
        None,
        datetime(1970, 1, 1, tzinfo=UTC),
    ],
    "day": [date(2026, 1, 31), date(1900, 1, 1), None],
    "since": [timedelta(seconds=90), timedelta(microseconds=-1), None],
    "top": [["books", "games"], [], None],
    "floats": [[1.0, 2.5, None], [None], None],  # inside lists, NaN reads as None (JSON)
    "hist": [{"clothes": 3, "books": 1}, {}, None],
    "pair": [{"k": "x", "n": 1}, {"k": None, "n": None}, None],
    "nested": [[[1, 2], []], None, [None]],
    "nothing": [None, None, None],
}


def test_every_value_type_reads_back_with_its_python_type(store):
    assert store.write("typed", rows(["a", "b", "c"], **TYPED_COLUMNS)) == 3
    for i, entity in enumerate(["a", "b", "c"]):
        got = store.read(entity, ["typed"])
        assert set(got) == set(TYPED_COLUMNS)
        for name, values in EXPECTED.items():
            assert same(got[name], values[i]), (entity, name, got[name], values[i])
    many = store.read_many(["c", "a", "b"], ["typed"])
    assert [m["i64"] for m in many] == [None, -(2**63), 2**63 - 1]


def test_entity_names_are_opaque_strings_and_integers_are_spelt_as_strings(store):
    odd = ["a:b:c", "ü ✓", "", "x" * 300, "{tag}", "*"]
    store.write("odd", rows(odd, n=list(range(len(odd)))))
    assert [r.get("n") for r in store.read_many(odd, ["odd"])] == list(range(len(odd)))
    store.write(
        "ids", pa.table({"entity": [42, 7], "_event_ts": pa.array([NOW] * 2, TS), "n": [1, 2]})
    )
    assert store.read("42", ["ids"]) == {"n": 1}
    assert store.read("a", ["ids"]) == {}


# -- event-time order --------------------------------------------------------------------


def test_newer_rows_win_older_rows_are_ignored_and_equal_times_replace(store):
    t0 = NOW - timedelta(hours=1)
    assert store.write("fs", rows(["u1", "u2"], t0, n=[1, 2])) == 2
    # one newer (applied), one older (ignored: a late replay must not regress the value)
    applied = store.write(
        "fs", rows(["u1", "u2"], [t0 + timedelta(seconds=1), t0 - timedelta(seconds=1)], n=[10, 20])
    )
    assert applied == 1
    assert store.read("u1", ["fs"]) == {"n": 10}
    assert store.read("u2", ["fs"]) == {"n": 2}
    # the same event time again: the later write is the correction and wins
    assert store.write("fs", rows(["u2"], t0, n=[21])) == 1
    assert store.read("u2", ["fs"]) == {"n": 21}
    info = store.info("fs")
    assert info is not None and (info.rows_applied, info.rows_stale) == (4, 1)


def test_within_one_batch_the_latest_row_of_an_entity_wins(store):
    t = [NOW - timedelta(seconds=s) for s in (5, 1, 9, 1)]
    store.write("fs", rows(["u", "u", "u", "v"], t, n=[1, 2, 3, 4]))
    assert store.read("u", ["fs"]) == {"n": 2}
    assert store.read("v", ["fs"]) == {"n": 4}


def test_replaying_a_materialisation_changes_nothing(store):
    batch = rows([f"u{i}" for i in range(500)], n=list(range(500)))
    store.write("fs", batch)
    assert store.write("fs", batch) == 500  # idempotent: same time, same values
    assert store.count("fs") == 500
    assert store.read("u499", ["fs"]) == {"n": 499}


# -- TTL ---------------------------------------------------------------------------------


def test_ttl_counts_from_event_time_and_expired_rows_read_as_absent(store):
    now = datetime.now(UTC)  # TTLs run on the wall clock: not the import time
    old = now - timedelta(hours=2)
    store.write("fs", rows(["stale", "fresh"], [old, now], n=[1, 2]), ttl=timedelta(hours=1))
    assert store.read("stale", ["fs"]) == {}
    assert store.read("fresh", ["fs"]) == {"n": 2}
    assert store.read_many(["stale", "fresh"], ["fs"]) == [{}, {"n": 2}]
    assert store.count("fs") == 1
    assert store.info("fs").ttl == timedelta(hours=1)


def test_rows_expire_while_the_store_runs(store):
    now = datetime.now(UTC)
    store.write("fs", rows(["u"], now, n=[1]), ttl=timedelta(seconds=2))
    assert store.read("u", ["fs"]) == {"n": 1}
    deadline = time.monotonic() + 15
    while store.read("u", ["fs"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    gone = datetime.now(UTC)
    assert store.read("u", ["fs"]) == {}
    assert gone >= now + timedelta(seconds=1.99)  # not a moment before event time + TTL
    assert store.count("fs") == 0


def test_an_expired_row_no_longer_blocks_older_rows(store):
    now = datetime.now(UTC)  # TTLs run on the wall clock: not the import time
    store.write("fs", rows(["u"], now - timedelta(hours=1), n=[1]), ttl=timedelta(minutes=30))
    assert store.read("u", ["fs"]) == {}
    assert store.write("fs", rows(["u"], now - timedelta(hours=3), n=[2])) == 1
    assert store.read("u", ["fs"]) == {"n": 2}


def test_a_newer_expired_row_hides_an_older_live_one(store):
    now = datetime.now(UTC)  # TTLs run on the wall clock: not the import time
    store.write("fs", rows(["u"], now - timedelta(hours=3), n=[1]))
    store.write("fs", rows(["u"], now - timedelta(hours=2), n=[2]), ttl=timedelta(hours=1))
    assert store.read("u", ["fs"]) == {}  # the latest value is stale: never fall back to older


# -- reads -------------------------------------------------------------------------------


def test_one_read_returns_all_features_across_feature_sets(store):
    store.write(
        "activity", rows(["u1", "u2"], activity__views_1d=[3, 4], activity__top=[["a"], []])
    )
    store.write("purchases", rows(["u1"], purchases__spend_7d=[12.5]))
    store.write("other", rows(["u1"], other__x=[1]))
    assert store.read("u1", ["activity", "purchases"]) == {
        "activity__views_1d": 3,
        "activity__top": ["a"],
        "purchases__spend_7d": 12.5,
    }
    assert store.read("u2", ["activity", "purchases", "never_written"]) == {
        "activity__views_1d": 4,
        "activity__top": [],
    }
    assert store.read("nobody", ["activity", "purchases"]) == {}
    assert store.read("u1", []) == {}


def test_feature_names_clashing_across_sets_are_refused_not_overwritten(store):
    store.write("a", rows(["u"], views=[1]))
    store.write("b", rows(["u"], views=[2]))
    with pytest.raises(UsageError, match="'views' is in both feature sets 'a' and 'b'"):
        store.read("u", ["a", "b"])
    with pytest.raises(UsageError, match="views"):
        store.read_many(["u"], ["a", "b"])


def test_reads_refuse_a_bare_string_and_bad_names_and_ignore_repeated_sets(store):
    store.write("fs", rows(["u"], n=[1]))
    with pytest.raises(UsageError, match="not the string 'fs'"):
        store.read("u", "fs")
    with pytest.raises(UsageError, match="not the string 'u'"):
        store.read_many("u", ["fs"])
    with pytest.raises(UsageError, match="invalid feature set name 'fs:u'"):
        store.read("x", ["fs:u"])  # would alias another key in Redis
    assert store.read("u", ("fs", "fs")) == {"n": 1}
    assert store.read_many(["u"], ["fs", "fs"]) == [{"n": 1}]


def test_read_many_keeps_input_order_duplicates_and_missing_entities(store):
    store.write("s1", rows(["a", "b", "c"], s1__n=[1, 2, 3]))
    store.write("s2", rows(["b"], s2__m=[20]))
    got = store.read_many(["c", "missing", "b", "a", "b"], ["s1", "s2"])
    assert got == [
        {"s1__n": 3},
        {},
        {"s1__n": 2, "s2__m": 20},
        {"s1__n": 1},
        {"s1__n": 2, "s2__m": 20},
    ]
    got[2]["s1__n"] = 99  # each result is its own dict
    assert got[4]["s1__n"] == 2
    assert store.read_many([], ["s1"]) == []
    assert store.read_many(["a"], []) == [{}]


def test_read_many_equals_repeated_read(store):
    ids = [f"u{i}" for i in range(0, 3000, 7)]
    store.write(
        "fs", rows(ids, x=[i * 0.5 for i in range(len(ids))], tag=[str(i) for i in range(len(ids))])
    )
    wanted = [*ids[::3], "ghost", *ids[1::5]]
    assert store.read_many(wanted, ["fs"]) == [store.read(e, ["fs"]) for e in wanted]


# -- scale, schema changes, persistence ------------------------------------------------------


def test_large_batches_are_written_completely(store):
    n = CHUNK_ROWS * 2 + 123
    ids = [f"user{i:07d}" for i in range(n)]
    assert (
        store.write(
            "big",
            rows(ids, c=pa.array(range(n), pa.int64()), f=pa.array([i / 3 for i in range(n)])),
        )
        == n
    )
    assert store.count("big") == n
    for i in (0, CHUNK_ROWS - 1, CHUNK_ROWS, n - 1):
        assert store.read(ids[i], ["big"]) == {"c": i, "f": i / 3}


def test_schema_changes_need_no_migration_and_old_rows_keep_their_features(store):
    store.write("fs", rows(["old", "both"], NOW - timedelta(hours=1), a=[1, 2], b=["x", "y"]))
    store.write("fs", rows(["both", "new"], a=[20, 30], c=[2.5, 3.5]))
    assert store.read("old", ["fs"]) == {"a": 1, "b": "x"}
    assert store.read("both", ["fs"]) == {"a": 20, "c": 2.5}
    assert store.read("new", ["fs"]) == {"a": 30, "c": 3.5}
    info = store.info("fs")
    assert info.features == {"a": "int64", "c": "double"}


def test_a_reopened_store_keeps_rows_and_reads_schemas_written_elsewhere(harness):
    first = harness.open()
    first.write("fs", rows(["u"], n=[1], top=[["a", "b"]]), ttl=timedelta(days=1))
    first.close()
    second = harness.open()
    assert second.read("u", ["fs"]) == {"n": 1, "top": ["a", "b"]}
    other = harness.open()  # another process: writes a schema `second` has never seen
    other.write("fs", rows(["v"], n=[2], extra=[True]))
    assert second.read("v", ["fs"]) == {"n": 2, "extra": True}
    assert second.count("fs") == 2


def test_concurrent_readers_see_whole_rows_that_never_go_back_in_time(harness):
    writer, reader_store = harness.open(), harness.open()
    entities = [f"e{i}" for i in range(200)]
    width = 12
    errors: list[BaseException] = []
    seen_versions: list[int] = []
    done = threading.Event()

    def write() -> None:
        try:
            for v in range(1, 25):
                cols = {f"f{j}": [v] * len(entities) for j in range(width)}
                writer.write(
                    "fs",
                    rows(
                        entities, NOW + timedelta(seconds=v), tag=[f"v{v}"] * len(entities), **cols
                    ),
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def read(store: OnlineStore, seed: int) -> None:
        last: dict[str, int] = {}
        i = seed
        try:
            while not done.is_set():
                e = entities[i % len(entities)]
                i += 7
                got = store.read(e, ["fs"])
                if not got:
                    assert e not in last, "a row disappeared"
                    continue
                versions = {got[f"f{j}"] for j in range(width)}
                assert len(versions) == 1 and got["tag"] == f"v{versions.pop()}", got
                v = got["f0"]
                assert v >= last.get(e, 0), f"{e} went back from {last[e]} to {v}"
                last[e] = v
                seen_versions.append(v)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write)]
    threads += [threading.Thread(target=read, args=(writer, s)) for s in (0, 1)]  # shared object
    threads += [threading.Thread(target=read, args=(reader_store, 3))]  # another connection
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(set(seen_versions)) > 1  # readers really ran during the writes
    assert {r["f0"] for r in reader_store.read_many(entities, ["fs"])} == {24}


# -- operators ---------------------------------------------------------------------------------


def test_delete_entities_and_whole_feature_sets(store):
    store.write("fs", rows(["a", "b", "c"], n=[1, 2, 3]))
    store.write("keep", rows(["a"], k=[1]))
    assert store.delete("fs", ["b", "nobody", "b"]) == 1
    assert store.read_many(["a", "b"], ["fs"]) == [{"n": 1}, {}]
    assert store.delete("fs") == 2
    assert store.count("fs") == 0 and store.info("fs") is None
    assert store.read("a", ["keep"]) == {"k": 1}
    # a deleted feature set can be written again, with any schema
    assert store.write("fs", rows(["a"], other=["x"])) == 1
    assert store.read("a", ["fs"]) == {"other": "x"}


def test_feature_set_info_reports_freshness_and_schema(store):
    before = datetime.now(UTC)
    store.write(
        "b_set",
        rows(["u", "v"], [NOW - timedelta(minutes=5), NOW - timedelta(minutes=9)], n=[1, 2]),
    )
    store.write("b_set", rows(["u"], NOW - timedelta(hours=1), n=[0]))  # stale: freshness stays
    store.write("a_set", rows(["u"], x=[1.0]), ttl=timedelta(days=7))
    infos = store.feature_sets()
    assert [i.name for i in infos] == ["a_set", "b_set"]
    b = infos[1]
    assert b.max_event_ts == NOW - timedelta(minutes=5)
    assert before <= b.last_write <= datetime.now(UTC)
    assert b.features == {"n": "int64"} and b.ttl is None
    assert (b.rows_applied, b.rows_stale) == (2, 1)
    assert infos[0].ttl == timedelta(days=7)
    assert store.info("missing") is None


# -- bad input -----------------------------------------------------------------------------


def test_bad_input_is_refused_with_a_message_that_says_what_and_where(store):
    with pytest.raises(InvalidInputError, match="no '_event_ts' column"):
        store.write("fs", pa.table({"entity": ["a"], "n": [1]}))
    with pytest.raises(
        InvalidInputError,
        match=r"'entity' of feature set 'fs' has 1 null value\(s\) \(first at row 1\)",
    ):
        store.write("fs", pa.table({"entity": ["a", None], "_event_ts": pa.array([NOW] * 2, TS)}))
    with pytest.raises(InvalidInputError, match="expected a timestamp"):
        store.write("fs", pa.table({"entity": ["a"], "_event_ts": ["2026-01-01"]}))
    with pytest.raises(InvalidInputError, match="feature 'price' has type decimal128"):
        store.write("fs", rows(["a"], price=pa.array([Decimal("1.5")])))
    with pytest.raises(UsageError, match="invalid feature set name 'a:b'"):
        store.write("a:b", rows(["a"], n=[1]))
    with pytest.raises(UsageError, match=r"ttl .* must be positive"):
        store.write("fs", rows(["a"], n=[1]), ttl=timedelta(0))
    assert store.write("fs", rows([], n=pa.array([], pa.int64()))) == 0
    assert store.feature_sets() == []  # nothing half-written


def test_a_closed_store_refuses_calls(harness):
    store = harness.open()
    store.close()
    store.close()  # twice is fine
    with pytest.raises(UsageError, match="closed"):
        store.write("fs", rows(["a"], n=[1]))
    with pytest.raises(UsageError, match="closed"):
        store.read("a", ["fs"])


# -- the model: whatever the order of writes, the latest event time wins -----------------------

ENTITIES = ["a", "b", "c:d", "é"]
row_st = st.tuples(
    st.sampled_from(ENTITIES),
    st.integers(0, 12),  # event time, seconds: many ties
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.one_of(st.none(), st.text(max_size=8)),
)
batch_st = st.tuples(st.booleans(), st.lists(row_st, min_size=1, max_size=12))


def _model_batch(variant: bool, batch: list[tuple]) -> pa.Table:
    ents, secs, ints, floats, texts = zip(*batch, strict=True)
    times = [NOW + timedelta(seconds=s) for s in secs]
    if variant:
        return rows(
            list(ents), times, i=pa.array(ints, pa.int64()), f=pa.array(floats, pa.float64())
        )
    return rows(list(ents), times, i=pa.array(ints, pa.int64()), t=pa.array(texts, pa.string()))


def _model_values(variant: bool, row: tuple) -> dict[str, Any]:
    _, _, i, f, t = row
    return {"i": i, "f": f} if variant else {"i": i, "t": t}


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(batch_st, min_size=1, max_size=6))
def test_the_store_always_holds_the_latest_event_time_written(store, batches):
    fs = f"m{uuid.uuid4().hex[:12]}"  # fresh per example: examples share the fixture's store
    model: dict[str, tuple[int, dict[str, Any]]] = {}
    for variant, batch in batches:
        expected_applied = 0
        for row in batch:
            ent, sec = row[0], row[1]
            if ent not in model or sec >= model[ent][0]:
                model[ent] = (sec, _model_values(variant, row))
                expected_applied += 1
        assert store.write(fs, _model_batch(variant, batch)) == expected_applied
        got = store.read_many(ENTITIES, [fs])
        for ent, values in zip(ENTITIES, got, strict=True):
            want = model[ent][1] if ent in model else {}
            assert same(values, want), (ent, values, want)
    assert store.count(fs) == len(model)
    store.delete(fs)
