"""Examples and labels: which events are examples, and did the outcome follow in time?

An example is an event matching ``models.<name>.examples``; it is positive when
an outcome event matching ``label.event`` with the same ``label.match`` keys
happens strictly after it and at most ``label.within`` later. Examples closer
than ``within`` to the end of the observed data cannot be labelled yet: they are
excluded (and counted), never labelled negative by default.

>>> ex = build_examples(project, "ctr", events=table)       # doctest: +SKIP
>>> ex.table.column_names[:4]
['example_id', 'ts', 'user_id', 'session_id']
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from clickloop.config.ml import ModelConfig
from clickloop.errors import ConfigError, InvalidInputError
from clickloop.events.schema import UTC_US
from clickloop.training.exprs import column_name, column_sql, to_sql
from clickloop.training.source import Events, events_relation

if TYPE_CHECKING:
    from clickloop.project import Project

log = logging.getLogger(__name__)

LABEL = "label"
EXAMPLE_ID = "example_id"
TS = "ts"
HOST = "host"
USER_KIND = "user_kind"
CONTEXT_PREFIX = "ctx__"
KEY_PREFIX = "key__"  # example columns holding the keys of feature sets with another entity


def set_entities(project: Project, cfg: ModelConfig) -> list[str]:
    """Entity references of the model's feature sets other than the model's own entity.

    >>> set_entities(project, cfg)                 # an item-keyed set    # doctest: +SKIP
    ['props.item_id']
    """
    out: list[str] = []
    for name in cfg.features:
        fs = project.config.features.get(name)
        if fs is None:
            continue
        refs = fs.entity if isinstance(fs.entity, list) else [fs.entity]
        if len(refs) != 1:
            raise ConfigError(
                f"features.{name}.entity: a composite key ({', '.join(refs)}) cannot be "
                f"joined to the examples of a model",
                hint="key the set by one column, e.g. props.item_id",
            )
        if refs[0] != cfg.entity and refs[0] not in out:
            out.append(refs[0])
    return out


@dataclass
class Examples:
    """Labelled examples in time order, plus the facts lineage and reports need."""

    table: pa.Table
    start: datetime | None
    end: datetime | None
    cutoff: datetime | None
    excluded_unlabelled: int = 0
    duplicates: int = 0
    context: list[str] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        return self.table.column(LABEL).to_numpy(zero_copy_only=False).astype(np.int8)

    @property
    def fingerprint(self) -> str:
        """A hash of the example ids, times and labels: same data → same fingerprint."""
        return fingerprint(self.table, [EXAMPLE_ID, TS, LABEL])

    def summary(self) -> dict[str, Any]:
        y = self.labels
        ts = self.table.column(TS)
        return {
            "examples": len(y),
            "positives": int(y.sum()),
            "rate": float(y.mean()) if len(y) else None,
            "first": _iso(pc.min(ts).as_py()) if len(y) else None,
            "last": _iso(pc.max(ts).as_py()) if len(y) else None,
            "cutoff": _iso(self.cutoff),
            "excluded_unlabelled": self.excluded_unlabelled,
            "duplicates_dropped": self.duplicates,
            "fingerprint": self.fingerprint,
        }


def fingerprint(table: pa.Table, columns: list[str]) -> str:
    """xxh3-128 over the named columns' values, in row order (independent of chunking)."""
    h = xxhash.xxh3_128()
    for name in columns:
        col = table.column(name)
        if pa.types.is_timestamp(col.type) or pa.types.is_boolean(col.type):
            col = pc.cast(col, pa.int64())
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        h.update(name.encode())
        h.update(np.ascontiguousarray(arr.is_null().to_numpy(zero_copy_only=False)).tobytes())
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            arr = pa.concat_arrays([arr.fill_null("")])  # fresh buffers starting at offset 0
            width = 8 if pa.types.is_large_string(arr.type) else 4
            bufs = arr.buffers()
            offsets = np.frombuffer(bufs[1], dtype=np.int64 if width == 8 else np.int32)
            offsets = offsets[: len(arr) + 1]
            h.update(offsets.tobytes())
            if bufs[2] is not None:
                h.update(memoryview(bufs[2])[: int(offsets[-1])])
        else:
            h.update(
                np.ascontiguousarray(arr.fill_null(0).to_numpy(zero_copy_only=False)).tobytes()
            )
    return h.hexdigest()


def parse_time(value: str | datetime | None) -> datetime | None:
    """An ISO date or datetime as an aware UTC datetime (naive means UTC)."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def build_examples(
    project: Project,
    model: str | ModelConfig,
    *,
    events: Events | None = None,
    start: str | datetime | None = None,
    end: str | datetime | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> Examples:
    """Select the model's examples in ``[start, end)`` and label them.

    ``start``/``end`` default to the model's configured range, then to all data.
    Events come from the lake unless ``events`` (an Arrow table or dataset of
    canonical events) is given.
    """
    cfg, where = _config(project, model)
    t0 = parse_time(start if start is not None else cfg.start)
    t1 = parse_time(end if end is not None else cfg.end)
    within = cfg.label.within
    own = con is None
    con = con or duckdb.connect()
    try:
        con.sql("SET TimeZone = 'UTC'")
        # outcomes may arrive up to `within` after the last example
        rel = events_relation(project, con, t0, t1 + within if t1 else None, events=events)
        rel.create_view("cl_ev", replace=True)
        return _query(con, cfg, where, t0, t1, within, set_entities(project, cfg))
    finally:
        if own:
            con.close()


def _config(project: Project, model: str | ModelConfig) -> tuple[ModelConfig, str]:
    if isinstance(model, ModelConfig):
        return model, "models.<inline>"
    try:
        return project.config.models[model], f"models.{model}"
    except KeyError:
        known = ", ".join(project.config.models) or "none"
        raise ConfigError(
            f"no model named {model!r} in {project.config_path or 'the configuration'}",
            hint=f"models defined: {known}",
        ) from None


def _query(
    con: duckdb.DuckDBPyConnection,
    cfg: ModelConfig,
    where: str,
    t0: datetime | None,
    t1: datetime | None,
    within: timedelta,
    entities: list[str] | None = None,
) -> Examples:
    within_us = int(within / timedelta(microseconds=1))
    try:
        keys = [column_sql(k) for k in cfg.label.match]
        ctx = [(column_sql(c), CONTEXT_PREFIX + column_name(c)) for c in cfg.context]
        ctx += [(column_sql(e), KEY_PREFIX + column_name(e)) for e in entities or []]
        entity = column_sql(cfg.entity)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    ex_filter = _checked(con, cfg.examples, f"{where}.examples")
    lab_filter = _checked(con, cfg.label.event, f"{where}.label.event")

    data_end, n_events = con.sql("SELECT max(ts) AS hi, count(*) AS n FROM cl_ev").fetchall()[0]
    if not n_events:
        raise InvalidInputError(
            "no events in the training range",
            hint="check models.<name>.start/end and that the lake holds events for that time",
        )
    data_end = data_end.astimezone(UTC)
    cutoff = data_end - within
    if t1 is not None:
        cutoff = min(cutoff, t1 - timedelta(microseconds=1))
    time_cond = [f"ts <= TIMESTAMPTZ '{cutoff.isoformat()}'"]
    if t0 is not None:
        time_cond.append(f"ts >= TIMESTAMPTZ '{t0.isoformat()}'")
    key_cols = ", ".join(f"{k} AS k{i}" for i, k in enumerate(keys))
    key_join = " AND ".join(f"ex.k{i} = lab.k{i}" for i in range(len(keys)))
    key_ok = " AND ".join(f"k{i} IS NOT NULL" for i in range(len(keys)))
    ctx_cols = "".join(f", {sql} AS {name}" for sql, name in ctx)
    sql = f"""
    WITH raw AS (
        SELECT event_id, ts, received_at, {entity} AS entity, session_id, url,
               props['item_url'] AS item_url, {key_cols}{ctx_cols}
        FROM cl_ev WHERE ({ex_filter}) AND {entity} IS NOT NULL
    ),
    ex AS (
        SELECT * EXCLUDE (received_at) FROM raw
        QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY received_at, ts) = 1
    ),
    lab AS (
        SELECT DISTINCT ON (event_id) event_id AS lid, ts AS lts, {key_cols}
        FROM cl_ev WHERE ({lab_filter}) AND {key_ok}
    ),
    hits AS (
        SELECT lab.lid, ex.event_id, ex.ts
        FROM lab JOIN ex ON {key_join} AND lab.lts > ex.ts
             AND lab.lts <= ex.ts + INTERVAL ({within_us}) MICROSECOND
    ),
    positive AS (
        {
        "SELECT DISTINCT event_id FROM hits"
        if cfg.label.attribution == "all"
        else "SELECT DISTINCT arg_max(event_id, struct_pack(t := ts, e := event_id)) AS event_id "
        "FROM hits GROUP BY lid"
    }
    ),
    labelled AS (
        SELECT ex.event_id, positive.event_id IS NOT NULL AS y
        FROM ex LEFT JOIN positive USING (event_id)
        WHERE {" AND ".join("ex." + c for c in time_cond)}
    ),
    firsts AS (SELECT {entity} AS entity, min(ts) AS first_seen FROM cl_ev GROUP BY 1),
    sessions AS (
        SELECT session_id, min(ts) AS session_start FROM cl_ev
        WHERE session_id IS NOT NULL GROUP BY 1
    )
    SELECT ex.event_id AS {EXAMPLE_ID}, ex.ts AS {TS}, ex.entity AS entity, ex.session_id,
           ex.url, ex.item_url,
           lower(regexp_extract(ex.url, '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]+)', 1))
               AS {HOST},
           CASE WHEN firsts.first_seen < coalesce(sessions.session_start, ex.ts)
                THEN 'returning' ELSE 'new' END AS {USER_KIND}
           {"".join(f", ex.{name}" for _, name in ctx)},
           labelled.y::TINYINT AS {LABEL}
    FROM ex JOIN labelled USING (event_id)
    LEFT JOIN firsts ON firsts.entity = ex.entity
    LEFT JOIN sessions ON sessions.session_id = ex.session_id
    ORDER BY ex.ts, ex.event_id
    """
    table = con.sql(sql).to_arrow_table()
    counts = con.sql(
        f"""SELECT count(*) AS n, count(DISTINCT event_id) AS d,
                   count(DISTINCT event_id) FILTER (WHERE ts > TIMESTAMPTZ '{cutoff.isoformat()}')
            FROM cl_ev WHERE ({ex_filter}) AND {entity} IS NOT NULL
            {f"AND ts >= TIMESTAMPTZ '{t0.isoformat()}'" if t0 else ""}"""
    ).fetchall()[0]
    n_raw, n_distinct, n_late = counts
    table = table.rename_columns([cfg.entity if c == "entity" else c for c in table.column_names])
    table = _canonical_times(table)
    log.info(
        "built %d examples (%d positive), %d too recent to label",
        table.num_rows,
        int(pc.sum(table.column(LABEL)).as_py() or 0),
        n_late,
    )
    return Examples(
        table=table,
        start=t0,
        end=t1,
        cutoff=cutoff,
        excluded_unlabelled=int(n_late),
        duplicates=int(n_raw - n_distinct),
        context=[name for _, name in ctx],
    )


def _checked(con: duckdb.DuckDBPyConnection, expression: str, where: str) -> str:
    sql = to_sql(expression)
    try:
        con.sql(f"SELECT count(*) FROM (SELECT * FROM cl_ev LIMIT 0) WHERE ({sql})").fetchall()
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(
            f"{where}: {expression!r} is not a valid event filter: {first}",
            hint="write a SQL condition over event columns, e.g. type = 'impression'; "
            "props.NAME reads a property",
        ) from None
    return sql


def _canonical_times(table: pa.Table) -> pa.Table:
    i = table.schema.get_field_index(TS)
    return table.set_column(i, TS, pc.cast(table.column(TS), UTC_US))


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).isoformat().replace("+00:00", "Z")
