"""Online feature store: read latency of one entity, materialisation throughput, row encoding.

Targets (issue 4): read of one entity with 50 features p99 ≤ 0.3 ms in-process with
SQLite; materialisation of 100k entities × 50 features ≥ 100,000 entities/s.
"""

from __future__ import annotations

import gc
import sqlite3
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from run import Context

from clickloop.stores.base import OnlineStore
from clickloop.stores.codec import RowCodec
from clickloop.stores.redis import RedisOnlineStore
from clickloop.stores.sqlite import SqliteOnlineStore
from clickloop.testing.servers import RedisServer

TITLE = "Online feature store (SQLite, Redis)"
NOTES = (
    "Rows: 50 features per entity, like a real user feature set — 24 integer counts, "
    "24 float sums/means, a top-5 category list and a last-seen category. Reads pick "
    "random entities among those written; latency is measured per call (`perf_counter_ns`) "
    "over 20,000 reads per round, 3 rounds. Baselines, same run: a primary-key `SELECT` of "
    "one small row with raw `sqlite3` (same file settings), and a raw redis-py `GET` of a "
    "small value — the floor of one round trip through each client. Materialisation "
    "baselines: pre-encoded rows written with a plain `INSERT OR REPLACE` (SQLite) or "
    "`SET` in pipelines (Redis), i.e. the backend's floor without event-time checks. "
    "Encoding: this store's binary records against an orjson dict per row (the obvious "
    "alternative), encoding the same 100k rows and decoding one row. Redis runs on loopback "
    "on the same 2-core machine, without hiredis (pure-Python protocol parser). The machine "
    "is shared: when other jobs run, wall-clock rates fall while the rates per CPU-second "
    "(this process's threads, plus redis-server's own CPU for Redis) stay put — compare "
    "those across runs."
)
N_FEATURES = 50
RUNS = 5  # materialisation runs (the machine is shared: medians of more runs are steadier)
SETS = ("user_activity",)


def make_rows(n: int, seed: int = 1, at: datetime | None = None) -> pa.Table:
    rng = np.random.default_rng(seed)
    at = at or datetime.now(UTC)
    cats = np.array(["clothes", "games", "books", "garden", "music", "sport", "toys", "food"])
    cols: dict[str, Any] = {
        "entity": pa.array([f"u{i:07d}" for i in range(n)]),
        "_event_ts": pa.array(np.full(n, int(at.timestamp() * 1e6)), pa.timestamp("us", "UTC")),
    }
    for j in range(24):
        cols[f"user_activity__count_{j}"] = pa.array(rng.poisson(3 + j, n).astype(np.int64))
    for j in range(24):
        cols[f"user_activity__mean_{j}"] = pa.array(rng.gamma(2.0, 10.0, n))
    top = rng.integers(0, len(cats), (n, 5))
    offsets = np.arange(0, 5 * n + 1, 5, dtype=np.int32)
    cols["user_activity__top_category_7d"] = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(cats[top.ravel()])
    )
    cols["user_activity__last_category"] = pa.array(cats[top[:, 0]])
    return pa.table(cols)


def _latency(fn: Callable[[Any], object], keys: list[Any], rounds: int = 3) -> list[list[float]]:
    """Per-call latencies in µs, one list per round."""
    for k in keys[:2000]:
        fn(k)  # warm caches, statement cache, connections
    out = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        samples = []
        for k in keys:
            t0 = clock()
            fn(k)
            samples.append((clock() - t0) / 1000)
        out.append(samples)
    return out


def _pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def _latency_results(name: str, rounds: list[list[float]], base: list[list[float]],
                     base_name: str, target_p99: float | None) -> list[dict[str, Any]]:  # fmt: skip
    out = []
    for q in (50, 99):
        runs = [_pct(r, q) for r in rounds]
        base_runs = [_pct(r, q) for r in base]
        med, bmed = statistics.median(runs), statistics.median(base_runs)
        r: dict[str, Any] = {
            "name": f"{name}: p{q}",
            "median": med,
            "unit": "µs",
            "fmt": "{:,.1f}",
            "runs": runs,
            "baseline": bmed,
            "baseline_name": base_name,
            "ratio": med / bmed,
        }
        if q == 99 and target_p99 is not None:
            r["target"] = f"p99 ≤ {target_p99:g} µs"
            r["ok"] = med <= target_p99
        out.append(r)
    return out


def _throughput(name: str, times: list[float], n: int, base_times: list[float],
                base_name: str, target: float | None) -> dict[str, Any]:  # fmt: skip
    med = n / statistics.median(times)
    base = n / statistics.median(base_times)
    r: dict[str, Any] = {
        "name": name,
        "median": med,
        "unit": "entities/s",
        "fmt": "{:,.0f}",
        "runs": [n / t for t in times],
        "baseline": base,
        "baseline_name": base_name,
        "ratio": med / base,
    }
    if target is not None:
        r["target"] = f"≥ {target:,.0f} entities/s"
        r["ok"] = med >= target
    return r


def _materialise(
    make_store: Callable[[int], OnlineStore],
    rows: pa.Table,
    server_cpu: Callable[[], float] = lambda: 0.0,
) -> tuple[list[float], list[float]]:
    """Wall times and CPU times (this process, all threads, plus the server's if any)."""
    times, cpu = [], []
    for i in range(RUNS):
        store = make_store(i)
        gc.collect()
        c0, s0 = time.process_time(), server_cpu()
        t0 = time.perf_counter()
        applied = store.write(SETS[0], rows, ttl=timedelta(days=7))
        times.append(time.perf_counter() - t0)
        if isinstance(store, SqliteOnlineStore):
            store.close()  # includes the background checkpoint's CPU
        cpu.append(time.process_time() - c0 + server_cpu() - s0)
        assert applied == rows.num_rows, applied
        store.close()
    return times, cpu


def _cpu_result(name: str, cpu: list[float], n: int) -> dict[str, Any]:
    return {
        "name": name,
        "median": n / statistics.median(cpu),
        "unit": "entities/CPU-s",
        "fmt": "{:,.0f}",
        "runs": [n / c for c in cpu],
    }


def _sqlite_floor(ctx: Context, blobs: list[bytes], entities: list[str]) -> list[float]:
    times = []
    for i in range(RUNS):
        con = _raw_sqlite(ctx, f"floor{i}")
        con.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID")
        gc.collect()
        t0 = time.perf_counter()
        con.execute("BEGIN")
        con.executemany("INSERT OR REPLACE INTO t VALUES (?, ?)", zip(entities, blobs, strict=True))
        con.execute("COMMIT")
        times.append(time.perf_counter() - t0)
        con.close()
    return times


def _raw_sqlite(ctx: Context, name: str) -> sqlite3.Connection:
    con = sqlite3.connect(ctx.scratch(name) / "raw.sqlite", isolation_level=None)
    con.execute("PRAGMA page_size = 8192")
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = NORMAL")
    return con


def _redis_floor(client: Any, blobs: list[bytes], entities: list[str]) -> list[float]:
    times = []
    for _ in range(RUNS):
        client.flushdb()
        gc.collect()
        t0 = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for i, (e, b) in enumerate(zip(entities, blobs, strict=True)):
            pipe.set("floor:" + e, b)
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        times.append(time.perf_counter() - t0)
    client.flushdb()
    return times


def _encoding(rows: pa.Table) -> list[dict[str, Any]]:
    features = rows.drop_columns(["entity", "_event_ts"])
    codec = RowCodec.from_arrow(features.schema)
    ts = rows.column("_event_ts").cast(pa.int64()).to_numpy()
    names = features.column_names

    def ours() -> list[bytes]:
        return codec.encode(features, ts).to_pylist()

    def json_rows() -> list[bytes]:
        cols = [c.to_pylist() for c in features.columns]
        return [orjson.dumps(dict(zip(names, r, strict=True))) for r in zip(*cols, strict=True)]

    t_ours, t_json = [], []
    for _ in range(3):
        gc.collect()
        t0 = time.perf_counter()
        blobs = ours()
        t_ours.append(time.perf_counter() - t0)
        gc.collect()
        t0 = time.perf_counter()
        docs = json_rows()
        t_json.append(time.perf_counter() - t0)
    n = rows.num_rows
    size_ours = sum(map(len, blobs)) / n
    size_json = sum(map(len, docs)) / n
    blob, doc = blobs[n // 2], docs[n // 2]
    assert codec.decode(blob) == orjson.loads(doc)
    dec_ours, dec_json = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(20_000):
            codec.decode(blob)
        dec_ours.append((time.perf_counter() - t0) / 20_000 * 1e6)
        t0 = time.perf_counter()
        for _ in range(20_000):
            orjson.loads(doc)
        dec_json.append((time.perf_counter() - t0) / 20_000 * 1e6)
    return [
        {
            "name": f"encoding: encode {n:,} rows × {N_FEATURES} features",
            "median": n / statistics.median(t_ours),
            "unit": "rows/s",
            "fmt": "{:,.0f}",
            "runs": [n / t for t in t_ours],
            "baseline": n / statistics.median(t_json),
            "baseline_name": "orjson dict per row",
            "ratio": statistics.median(t_json) / statistics.median(t_ours),
        },
        {
            "name": "encoding: bytes per row",
            "median": size_ours,
            "unit": "B",
            "fmt": "{:,.0f}",
            "runs": [size_ours],
            "baseline": size_json,
            "baseline_name": "orjson dict per row",
            "ratio": size_ours / size_json,
        },
        {
            "name": "encoding: decode one row",
            "median": statistics.median(dec_ours),
            "unit": "µs",
            "fmt": "{:,.2f}",
            "runs": dec_ours,
            "baseline": statistics.median(dec_json),
            "baseline_name": "orjson.loads of the dict",
            "ratio": statistics.median(dec_ours) / statistics.median(dec_json),
        },
    ]


def run(ctx: Context) -> list[dict[str, Any]]:
    n = 20_000 if ctx.quick else 100_000
    rows = make_rows(n)
    entities = rows.column("entity").to_pylist()
    rng = np.random.default_rng(3)
    picks = [entities[i] for i in rng.integers(0, n, 20_000)]
    results: list[dict[str, Any]] = []

    # -- SQLite ----------------------------------------------------------------------
    def sqlite_store(i: int) -> SqliteOnlineStore:
        return SqliteOnlineStore(ctx.scratch(f"sqlite{i}") / "online.sqlite")

    t_sqlite, cpu_sqlite = _materialise(sqlite_store, rows)
    codec = RowCodec.from_arrow(rows.drop_columns(["entity", "_event_ts"]).schema)
    ts = rows.column("_event_ts").cast(pa.int64()).to_numpy()
    blobs = codec.encode(rows.drop_columns(["entity", "_event_ts"]), ts).to_pylist()
    t_floor = _sqlite_floor(ctx, blobs, entities)
    results.append(
        _throughput(
            f"SQLite: materialise {n:,} entities × {N_FEATURES} features",
            t_sqlite, n, t_floor, "raw INSERT OR REPLACE of pre-encoded rows",
            100_000 if not ctx.quick else None,
        )
    )  # fmt: skip
    results.append(
        _cpu_result(f"SQLite: materialise {n:,} entities, per CPU-second", cpu_sqlite, n)
    )

    store = SqliteOnlineStore(ctx.scratch("sqlite-read") / "online.sqlite")
    store.write(SETS[0], rows)
    raw = _raw_sqlite(ctx, "raw-read")
    raw.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID")
    raw.executemany("INSERT INTO t VALUES (?, ?)", ((e, i) for i, e in enumerate(entities)))
    sql = "SELECT v FROM t WHERE k = ?"
    base = _latency(lambda e: raw.execute(sql, (e,)).fetchone(), picks)
    ours = _latency(lambda e: store.read(e, SETS), picks)
    assert len(store.read(picks[0], SETS)) == N_FEATURES
    results += _latency_results(
        f"SQLite: read one entity, {N_FEATURES} features", ours, base,
        "raw sqlite3 PK SELECT of a small row", 300.0,
    )  # fmt: skip

    # the same 50 features split over 3 feature sets, read together
    split = {
        "ua_counts": [c for c in rows.column_names if "__count_" in c],
        "ua_means": [c for c in rows.column_names if "__mean_" in c],
        "ua_cats": [c for c in rows.column_names if "category" in c],
    }
    for fs, cols in split.items():
        store.write(fs, rows.select(["entity", "_event_ts", *cols]))
    three = list(split)
    ours3 = _latency(lambda e: store.read(e, three), picks)
    assert len(store.read(picks[0], three)) == N_FEATURES
    results += _latency_results(
        f"SQLite: read one entity, 3 feature sets, {N_FEATURES} features", ours3, base,
        "raw sqlite3 PK SELECT of a small row", None,
    )  # fmt: skip
    batch = [picks[i : i + 100] for i in range(0, 20_000, 100)]
    many = _latency(lambda b: store.read_many(b, SETS), batch)
    results.append(
        {
            "name": f"SQLite: read_many 100 entities × {N_FEATURES} features, per entity",
            "median": statistics.median(statistics.median(r) for r in many) / 100,
            "unit": "µs",
            "fmt": "{:,.1f}",
            "runs": [statistics.median(r) / 100 for r in many],
        }
    )
    store.close()
    raw.close()

    # -- Redis -----------------------------------------------------------------------
    with RedisServer() as server:
        import redis

        client = redis.Redis.from_url(server.url)

        def redis_store(i: int) -> RedisOnlineStore:
            client.flushdb()
            return RedisOnlineStore(server.url, key_prefix="bench:")

        def redis_cpu() -> float:
            info = client.info("cpu")
            return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

        t_redis, cpu_redis = _materialise(redis_store, rows, redis_cpu)
        t_rfloor = _redis_floor(client, blobs, entities)
        results.append(
            _throughput(
                f"Redis: materialise {n:,} entities × {N_FEATURES} features",
                t_redis, n, t_rfloor, "raw pipelined SET of pre-encoded rows",
                100_000 if not ctx.quick else None,
            )
        )  # fmt: skip
        results.append(
            _cpu_result(f"Redis: materialise {n:,} entities, per CPU-second (client + server)",
                        cpu_redis, n)
        )  # fmt: skip
        rstore = RedisOnlineStore(server.url, key_prefix="bench:")
        client.flushdb()
        rstore.write(SETS[0], rows)
        client.set("small", b"12345")
        base_r = _latency(lambda _e: client.get("small"), picks)
        ours_r = _latency(lambda e: rstore.read(e, SETS), picks)
        assert len(rstore.read(picks[0], SETS)) == N_FEATURES
        results += _latency_results(
            f"Redis: read one entity, {N_FEATURES} features", ours_r, base_r,
            "raw redis-py GET of a small value", None,
        )  # fmt: skip
        rstore.close()
        client.close()

    results += _encoding(rows)
    return results
