"""The batch engine: point-in-time training sets and backfills, DuckDB over the lake.

Work is split by entity: a feature set's rows are hashed into ``P`` partitions
so that each holds at most ``memory_rows`` rows (DuckDB spills the staging
table to disk), and each partition goes through the vectorised kernel
(:mod:`clickloop.features.pit`) on its own. Memory is bounded by a partition,
not by the data.

>>> t = training_set(project, examples, ["user_activity"])          # doctest: +SKIP
>>> t.num_rows == examples.num_rows                                  # always
True
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clickloop.errors import InvalidInputError, UsageError
from clickloop.features import offline
from clickloop.features.definition import US, FeatureSet, load_sets
from clickloop.features.pit import Index, compute
from clickloop.features.source import (
    Knowledge,
    connect,
    entity_codes,
    events_relation,
    load_knowledge,
    register_urls,
    rows_from_arrow,
    rows_sql,
    stage_events,
)

if TYPE_CHECKING:
    import duckdb

    from clickloop.project import Project

log = logging.getLogger(__name__)

MEMORY_ROWS: Final = 4_000_000
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
SetRef = str | FeatureSet


def _us(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - EPOCH) // timedelta(microseconds=1)


def _dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def compile_sets(project: Project, feature_sets: Sequence[SetRef] | None,
                 knowledge: Knowledge | None) -> list[FeatureSet]:  # fmt: skip
    """Compile the named sets against the project's URL knowledge (when there is one)."""
    return load_sets(project, feature_sets, knowledge=knowledge)


def feature_names(project: Project, feature_sets: Sequence[SetRef]) -> list[str]:
    """The feature columns ``training_set`` adds for these sets, in order.

    >>> feature_names(project, ["user_clicks"])                     # doctest: +SKIP
    ['user_clicks__count_1d', 'user_clicks__count_7d']
    """
    return [n for fs in load_sets(project, feature_sets) for n in fs.names]


@contextmanager
def _engine(
    project: Project, start: int | None, end: int | None, memory_limit: str | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    tmp_root = project.state_path("tmp")
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="features-", dir=tmp_root) as tmp:
        con = connect(tmp, memory_limit=memory_limit)
        try:
            rel = events_relation(
                project,
                con,
                None if start is None else _dt(start),
                None if end is None else _dt(end),
            )
            rel.create_view("_ev")
            yield con
        finally:
            con.close()


@dataclass
class _Plan:
    """How one feature set's rows are read: directly, or from a staging table in parts."""

    fs: FeatureSet
    parts: int
    since: int | None
    staged: str | None = None

    source: str = "_ev"

    def query(self, part: int) -> str:
        if self.staged is None:
            return rows_sql(self.fs, self.source, since=self.since,
                            staged=self.source != "_ev")  # fmt: skip
        return f"SELECT * FROM {self.staged} WHERE hash(entity) % {self.parts} = {part}"


def _plan(con: duckdb.DuckDBPyConnection, fs: FeatureSet, since: int | None,
          memory_rows: int, source: str = "_ev") -> _Plan:  # fmt: skip
    select = rows_sql(fs, source, since=since, staged=source != "_ev")
    n = int(con.sql(f"SELECT count(*) FROM ({select})").fetchall()[0][0])
    if n <= memory_rows:
        return _Plan(fs, 1, since, source=source)
    parts = math.ceil(n / memory_rows)
    staged = f"_rows_{fs.name}"
    # Stage the filtered rows once (DuckDB spills them to its temp directory when they
    # exceed memory) instead of rescanning the lake for every part.
    con.sql(f"CREATE OR REPLACE TEMP TABLE {staged} AS {select}")
    log.info("feature set %s: %d rows in %d partitions", fs.name, n, parts)
    return _Plan(fs, parts, since, staged, source=source)


def _partitions(con: duckdb.DuckDBPyConnection, keys: pa.Array, parts: int) -> np.ndarray:
    """The partition of each key, by DuckDB's hash (the same the row queries use)."""
    if parts == 1:
        return np.zeros(len(keys), np.int64)
    con.register("_keys", pa.table({"k": keys, "i": pa.array(np.arange(len(keys)))}))
    # ORDER BY: the connection does not preserve insertion order (faster scans)
    got = con.sql(
        f"SELECT coalesce(hash(k) % {parts}, 0) AS p FROM _keys ORDER BY i"
    ).to_arrow_table()
    con.unregister("_keys")
    return np.asarray(got.column("p").to_numpy(), np.int64)


def _run(con: duckdb.DuckDBPyConnection, plan: _Plan, keys: pa.Array, qt: np.ndarray,
         ok: np.ndarray) -> dict[str, pa.Array]:  # fmt: skip
    """Feature values for queries (keys, times); rows with ``ok`` false get empty history."""
    fs = plan.fs
    part_of = _partitions(con, keys, plan.parts)
    pieces: dict[str, list[pa.Array]] = {f.name: [] for f in fs.features}
    positions: list[np.ndarray] = []
    for p in range(plan.parts):
        sel = np.nonzero(part_of == p)[0]
        if len(sel) == 0:
            continue
        rows, entities = rows_from_arrow(fs, con.sql(plan.query(p)).to_arrow_table())
        qe = entity_codes(entities, keys.take(pa.array(sel)))
        qe = np.where(ok[sel], qe, -1)
        values = compute(fs, rows, qe, qt[sel])
        for name, arr in values.items():
            pieces[name].append(arr)
        positions.append(sel)
    if not positions:
        return {f.name: pa.nulls(0, f.dtype) for f in fs.features}
    inverse = np.argsort(np.concatenate(positions), kind="stable")
    take = pa.array(inverse)
    return {name: pa.concat_arrays(arrs).take(take) for name, arrs in pieces.items()}


def _times(examples: pa.Table, ts: str) -> tuple[np.ndarray, np.ndarray]:
    if ts not in examples.column_names:
        raise InvalidInputError(
            f"examples have no {ts!r} column",
            hint=f"columns: {', '.join(examples.column_names)}; pass ts=… to name another",
        )
    col = examples.column(ts)
    t = col.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            col = pc.assume_timezone(col, "UTC")
        col = pc.cast(col, pa.timestamp("us", tz="UTC"))
    elif pa.types.is_date(t):
        col = pc.cast(pc.cast(col, pa.timestamp("s")), pa.timestamp("us", tz="UTC"))
    else:
        raise InvalidInputError(
            f"examples column {ts!r} is {t}, not a timestamp",
            hint="cast it to timestamp[us, UTC] (pyarrow.compute.cast) first",
        )
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    ok = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), bool)
    us = np.asarray(arr.cast(pa.int64()).fill_null(0).to_numpy(), np.int64)
    return us, ok


def _key_column(fs: FeatureSet, examples: pa.Table, entity: str | Mapping[str, str]) -> str:
    """Which examples column holds a set's entity key.

    An explicit ``{set: column}`` wins; a single ``entity`` column serves sets keyed
    by ``user_id`` (the usual entity) or by that very name; a set keyed by something
    else uses the examples column of the same name.
    """
    if isinstance(entity, Mapping):
        if fs.name in entity:
            return entity[fs.name]
        entity = "user_id"
    own = "|".join(fs.entity)
    if own in ("user_id", entity):
        return entity
    if own in examples.column_names:
        return own
    raise InvalidInputError(
        f"feature set {fs.name!r} is keyed by {own}, and the examples have no such column",
        hint=f"add a {own!r} column, or pass entity={{{fs.name!r}: 'COLUMN'}}",
    )


def _keys(examples: pa.Table, column: str) -> pa.Array:
    if column not in examples.column_names:
        raise InvalidInputError(
            f"examples have no entity column {column!r}",
            hint=f"columns: {', '.join(examples.column_names)}; pass entity=… to name another",
        )
    col = examples.column(column).combine_chunks()
    return col if pa.types.is_string(col.type) else pc.cast(col, pa.string())


def training_set(
    project: Project,
    examples: pa.Table,
    feature_sets: Sequence[SetRef],
    *,
    entity: str | Mapping[str, str] = "user_id",
    ts: str = "ts",
    knowledge: Knowledge | None = None,
    memory_rows: int = MEMORY_ROWS,
    memory_limit: str | None = None,
) -> pa.Table:
    """Point-in-time correct features for every row of ``examples``.

    Exactly one output row per input row, in input order: the input columns plus
    every feature of ``feature_sets``, each computed only from events strictly
    before the row's ``ts``. An entity with no history yet gets 0 for counts and
    sums, the declared default or null otherwise; a row with a null entity or
    time is kept with those same empty values.

    ``entity`` names the examples' key column (one for all sets, or per set name).
    Memory: at most ``memory_rows`` rows of one set are in the kernel at a time
    (more are split by entity hash); ``memory_limit`` caps DuckDB (e.g. ``"2GB"``;
    beyond it, it spills to ``<home>/tmp``).

    >>> ex = pa.table({"user_id": ["u1", "u2"], "ts": pa.array([t1, t2], pa.timestamp("us"))})
    >>> training_set(project, ex, ["user_activity"]).column_names     # doctest: +SKIP
    ['user_id', 'ts', 'user_activity__count_1h', ...]
    """
    if not feature_sets:
        raise UsageError("training_set needs at least one feature set")
    knowledge = knowledge if knowledge is not None else load_knowledge(project)
    sets = compile_sets(project, feature_sets, knowledge)
    qt, ok = _times(examples, ts)
    clash = [n for fs in sets for n in fs.names if n in examples.column_names]
    if clash:
        raise UsageError(f"examples already have columns named like features: {clash[:5]}")
    out = examples
    if examples.num_rows == 0 or not ok.any():
        for fs in sets:
            for f in fs.features:
                out = out.append_column(f.name, _empty(f, examples.num_rows))
        return out
    t_max = int(qt[ok].max())
    t_min = int(qt[ok].min())
    since = {fs.name: None if fs.max_window is None else t_min - fs.max_window for fs in sets}
    start = None if any(v is None for v in since.values()) else min(v or 0 for v in since.values())
    t0 = time.perf_counter()
    with _engine(project, start, t_max, memory_limit) as con:
        source = stage_events(con, sets, "_ev") if len(sets) > 1 else "_ev"
        register_urls(con, sets, source, knowledge, staged=source != "_ev")
        for fs in sets:
            keys = _keys(examples, _key_column(fs, examples, entity))
            ok_fs = ok & np.asarray(keys.is_valid().to_numpy(zero_copy_only=False), bool)
            plan = _plan(con, fs, since[fs.name], memory_rows, source)
            values = _run(con, plan, keys, qt, ok_fs)
            for f in fs.features:
                out = out.append_column(f.name, values[f.name])
    log.info("training set: %d rows × %d sets in %.1fs", out.num_rows, len(sets),
             time.perf_counter() - t0)  # fmt: skip
    return out


def _empty(f: Any, n: int) -> pa.Array:
    """Values for rows without any history (0 for counts and sums, default or null)."""
    if f.op in ("count", "distinct_count", "approx_distinct_count"):
        return pa.array(np.zeros(n, np.int64))
    if f.op == "sum":
        return pa.array(np.zeros(n, np.float64))
    if f.op == "top_k":
        return pa.array([[] for _ in range(n)], f.dtype)
    if f.op == "histogram":
        return pa.array([[] for _ in range(n)], f.dtype)
    if f.default is not None:
        return pa.array([f.default] * n, f.dtype)
    return pa.nulls(n, f.dtype)


# -- backfill ------------------------------------------------------------------------------


@dataclass
class BackfillResult:
    feature_set: str
    version: str
    snapshots: list[datetime] = field(default_factory=list)
    rows: int = 0
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_set": self.feature_set, "version": self.version,
            "snapshots": [t.isoformat() for t in self.snapshots], "rows": self.rows,
            "files": len(self.files), "seconds": round(self.seconds, 3),
        }  # fmt: skip


def snapshot_times(start: datetime, end: datetime, every: timedelta) -> list[datetime]:
    """Multiples of ``every`` (from the epoch, UTC) in ``(start, end]``.

    >>> snapshot_times(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC),
    ...                timedelta(days=1))[0].isoformat()
    '2026-11-02T00:00:00+00:00'
    """
    step = every // timedelta(microseconds=1)
    if step <= 0:
        raise UsageError("--every must be positive")
    lo, hi = _us(start), _us(end)
    if hi <= lo:
        raise UsageError(f"the backfill range is empty: {start.isoformat()} .. {end.isoformat()}")
    first = (lo // step + 1) * step
    return [_dt(t) for t in range(first, hi + 1, step)]


def backfill(
    project: Project,
    feature_sets: Sequence[SetRef] | None = None,
    *,
    start: datetime,
    end: datetime,
    every: timedelta = timedelta(days=1),
    knowledge: Knowledge | None = None,
    memory_rows: int = MEMORY_ROWS,
    memory_limit: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[BackfillResult]:
    """Compute snapshots at every ``every`` boundary in ``(start, end]`` into the offline store.

    A snapshot at time T holds, for every entity with history before T (within
    the longest window when no feature is lifetime), the values a point-in-time
    lookup at T returns. Re-running a range replaces its snapshots.

    >>> backfill(project, ["user_activity"], start=datetime(2026, 11, 1, tzinfo=UTC),
    ...          end=datetime(2026, 11, 8, tzinfo=UTC))               # doctest: +SKIP
    """
    times = snapshot_times(start, end, every)
    if not times:
        raise UsageError(
            f"no snapshot time falls in ({start.isoformat()}, {end.isoformat()}]",
            hint=f"widen the range or use a shorter --every than {every}",
        )
    knowledge = knowledge if knowledge is not None else load_knowledge(project)
    sets = compile_sets(project, feature_sets, knowledge)
    stamps = np.array([_us(t) for t in times], np.int64)
    since = {fs.name: None if fs.max_window is None else int(stamps[0]) - fs.max_window
             for fs in sets}  # fmt: skip
    lo = None if any(v is None for v in since.values()) else min(v or 0 for v in since.values())
    results = []
    with _engine(project, lo, int(stamps[-1]), memory_limit) as con:
        source = stage_events(con, sets, "_ev") if len(sets) > 1 else "_ev"
        register_urls(con, sets, source, knowledge, staged=source != "_ev")
        for fs in sets:
            t0 = time.perf_counter()
            res = BackfillResult(fs.name, fs.version, list(times))
            offline.write_definition(project, fs)
            for t in times:
                offline.clear_snapshot(project, fs, t)
            plan = _plan(con, fs, since[fs.name], memory_rows, source)
            for p in range(plan.parts):
                rows, entities = rows_from_arrow(fs, con.sql(plan.query(p)).to_arrow_table())
                if len(rows) == 0:
                    continue
                # every (entity with history, snapshot) pair in one kernel call
                idx = Index(rows.ent, rows.ts)
                codes = np.arange(len(entities), dtype=np.int64)
                qe_all, qt_all = [], []
                for t_us in stamps.tolist():
                    qt = np.full(len(codes), t_us, np.int64)
                    before = idx.pos(codes, qt)
                    if fs.max_window is None:
                        lower = idx.start(codes)
                    else:
                        lower = idx.pos(codes, qt - fs.max_window)
                    active = codes[before > lower]
                    qe_all.append(active)
                    qt_all.append(np.full(len(active), t_us, np.int64))
                values = compute(fs, rows, np.concatenate(qe_all), np.concatenate(qt_all))
                first = 0
                for t, active in zip(times, qe_all, strict=True):
                    n = len(active)
                    if n == 0:
                        continue
                    table = pa.table({
                        "entity": entities.take(pa.array(active)),
                        "_as_of": pa.array(np.full(n, _us(t)), pa.timestamp("us", "UTC")),
                        **{k: v.slice(first, n) for k, v in values.items()},
                    })  # fmt: skip
                    first += n
                    res.files.append(offline.write_snapshot(project, fs, t, table, part=p))
                    res.rows += n
                    if progress:
                        progress(n)
            res.seconds = time.perf_counter() - t0
            log.info("backfilled %s: %d rows, %d snapshots", fs.name, res.rows, len(times))
            results.append(res)
    return results


def as_of_values(project: Project, keys: Sequence[str], as_of: datetime,
                 feature_sets: Sequence[SetRef] | None = None, *,
                 knowledge: Knowledge | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Feature values of a few entities as of one time, computed from the lake (debugging)."""
    ex = pa.table({
        "entity": pa.array(list(keys), pa.string()),
        "ts": pa.array([as_of] * len(keys), pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    sets = feature_sets if feature_sets is not None else list(project.config.features)
    # the keys are whatever the sets are keyed by (users, sessions, items)
    by = {s if isinstance(s, str) else s.name: "entity" for s in sets}
    t = training_set(project, ex, sets, entity=by, ts="ts", knowledge=knowledge)
    return t.drop_columns(["ts"]).to_pylist()


__all__ = ["US", "BackfillResult", "backfill", "feature_names", "snapshot_times", "training_set"]
