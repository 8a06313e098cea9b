"""Where feature rows come from: the raw lake, filtered and derived, with URL fields joined.

For the batch engine a feature set's rows are one DuckDB query over the lake's
events: the filter and derived columns compiled to SQL, URL fields joined from a
table extracted once per distinct URL (across all feature sets of a run), rows
sorted by (entity, ts, event_id) — the order every engine uses to break ties.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clickloop.errors import ConfigError
from clickloop.features.definition import FeatureSet
from clickloop.features.expr import Node, columns, conjoin, conjuncts
from clickloop.features.pit import Column, Rows
from clickloop.features.translate import sql_string, to_sql

if TYPE_CHECKING:
    import duckdb

    from clickloop.project import Project

log = logging.getLogger(__name__)


class Knowledge(Protocol):
    """What the engines need from URL knowledge (``clickloop.urls.UrlKnowledge``)."""

    def extract(self, urls: pa.Array) -> pa.Table: ...


def load_knowledge(project: Project) -> Knowledge:
    """The project's URL knowledge (declared rules plus the learned knowledge file)."""
    from clickloop.urls import load_knowledge as _load

    result: Knowledge = _load(project)
    return result


def url_fields(knowledge: Knowledge | None) -> list[str] | None:
    """The ``url.X`` names a knowledge base provides (None: unknown, accept any)."""
    if knowledge is None:
        return None
    return list(knowledge.extract(pa.array([], pa.string())).column_names)


def lake_root(project: Project) -> str:
    """The lake root: a local directory or an fsspec URL."""
    from clickloop.config.infra import FsspecLakeConfig

    cfg = project.config.lake
    if isinstance(cfg, FsspecLakeConfig):
        return cfg.root.rstrip("/")
    return str(project.resolve_path(cfg.path) if cfg.path else project.state_path("lake"))


def events_relation(
    project: Project, con: duckdb.DuckDBPyConnection, start: datetime | None, end: datetime | None
) -> duckdb.DuckDBPyRelation:
    """The lake's events with ``start <= ts < end`` as a DuckDB relation."""
    from clickloop.lake import open_lake

    rel: duckdb.DuckDBPyRelation = open_lake(project).events_relation(con, start, end)
    return rel


# -- SQL for a feature set's rows ---------------------------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def column_sql(fs: FeatureSet, ref: str, staged: bool = False) -> str:
    """DuckDB SQL for a column reference inside a set's row query (``ev``: events, ``u``: URLs).

    ``staged``: the events come from :func:`stage_events`, where each property read
    by some set is a column of its own (named ``props.<key>``).
    """
    if ref in fs.derive:
        return "(" + to_sql(fs.derive[ref], _resolver(fs, staged)) + ")"
    if ref.startswith("props."):
        return f"ev.{_quote(ref)}" if staged else f"ev.props[{sql_string(ref[6:])}]"
    if ref.startswith("url."):
        return "u." + _quote(ref[4:])
    return "ev." + _quote(ref)


def _resolver(fs: FeatureSet, staged: bool) -> Callable[[str], str]:
    return lambda ref: column_sql(fs, ref, staged)


def base_columns(fs: FeatureSet) -> set[str]:
    """Every event column a set reads: canonical names, ``props.X`` and ``url.X``."""
    refs: set[str] = {"ts", "event_id"}
    nodes = [fs.where, *fs.inputs.values()] if fs.where is not None else [*fs.inputs.values()]
    for node in nodes:
        refs |= _expanded_columns(fs, node)
    for ref in fs.entity:
        refs |= _expanded_columns(fs, fs.column_node(ref))
    return refs


def stage_events(con: duckdb.DuckDBPyConnection, sets: Sequence[FeatureSet], source: str) -> str:
    """Copy the event columns the sets read into one temporary table (one scan of the lake).

    Returns its name. Properties become plain columns, so no set reads the props map.
    """
    refs: set[str] = set()
    for fs in sets:
        refs |= base_columns(fs)
    if any(needs_urls(fs) for fs in sets):
        refs.add("url")
    cols = []
    for ref in sorted(r for r in refs if not r.startswith("url.")):
        if ref.startswith("props."):
            cols.append(f"props[{sql_string(ref[6:])}] AS {_quote(ref)}")
        else:
            cols.append(_quote(ref))
    con.sql(f"CREATE OR REPLACE TEMP TABLE _evs AS SELECT {', '.join(cols)} FROM {source}")
    return "_evs"


def _expanded_columns(fs: FeatureSet, node: Node) -> set[str]:
    out: set[str] = set()
    for ref in columns(node):
        out |= _expanded_columns(fs, fs.derive[ref]) if ref in fs.derive else {ref}
    return out


def needs_urls(fs: FeatureSet) -> bool:
    return bool(fs.url_fields)


def url_prefilter(fs: FeatureSet) -> Node | None:
    """The part of a set's filter that does not depend on URL fields (to pick URLs to extract)."""
    if fs.where is None:
        return None
    keep = [
        c for c in conjuncts(fs.where)
        if not any(r.startswith("url.") for r in _expanded_columns(fs, c))
    ]  # fmt: skip
    return conjoin(keep)


def entity_sql(fs: FeatureSet, staged: bool = False) -> str:
    parts = [f"CAST({column_sql(fs, ref, staged)} AS VARCHAR)" for ref in fs.entity]
    if len(parts) == 1:
        return parts[0]
    nulls = " OR ".join(f"{p} IS NULL" for p in parts)
    joined = " || '|' || ".join(parts)
    return f"(CASE WHEN {nulls} THEN NULL ELSE {joined} END)"


def rows_sql(fs: FeatureSet, source: str, *, partition: tuple[int, int] | None = None,
             since: int | None = None, staged: bool = False) -> str:  # fmt: skip
    """The query producing a set's rows: entity, ts (µs), event_id and one column per input.

    Unordered: :func:`rows_from_arrow` sorts (faster than a SQL sort on text keys).
    """
    inputs = fs.inputs
    entity = entity_sql(fs, staged)
    cols = [f"{entity} AS entity", "epoch_us(ev.ts) AS ts", "ev.event_id AS event_id"]
    for i, node in enumerate(inputs.values()):  # c<i>: the i-th input of FeatureSet.inputs
        cols.append(f"{to_sql(node, _resolver(fs, staged))} AS c{i}")
    join = " LEFT JOIN _urls u ON ev.url = u._url" if needs_urls(fs) else ""
    cond = [f"({entity}) IS NOT NULL"]
    if fs.where is not None:
        cond.append("(" + to_sql(fs.where, _resolver(fs, staged)) + ") IS TRUE")
    if since is not None:
        cond.append(f"epoch_us(ev.ts) >= {int(since)}")
    if partition is not None and partition[1] > 1:
        cond.append(f"hash({entity}) % {partition[1]} = {partition[0]}")
    select = ",\n  ".join(cols)
    return f"SELECT\n  {select}\nFROM {source} ev{join}\nWHERE {' AND '.join(cond)}"


def register_urls(
    con: duckdb.DuckDBPyConnection,
    sets: Sequence[FeatureSet],
    source: str,
    knowledge: Knowledge | None,
    *,
    staged: bool = False,
) -> int:
    """Extract URL fields once per distinct URL the sets need; register them as ``_urls``."""
    using = [fs for fs in sets if needs_urls(fs)]
    if not using:
        return 0
    if knowledge is None:
        names = ", ".join(sorted({f"url.{f}" for fs in using for f in fs.url_fields}))
        raise ConfigError(
            f"feature sets {', '.join(fs.name for fs in using)} read URL fields ({names}) "
            "but no URL knowledge is available",
            hint="run `clickloop urls learn` (or declare urls.rules in clickloop.yaml)",
        )
    pre = []
    for fs in using:
        node = url_prefilter(fs)
        pre.append("TRUE" if node is None else to_sql(node, _resolver(fs, staged)))
    sql = (
        f"SELECT DISTINCT ev.url AS url FROM {source} ev "
        f"WHERE ev.url IS NOT NULL AND (({') OR ('.join(pre)}))"
    )
    urls = con.sql(sql).to_arrow_table().column("url").combine_chunks()
    table = extract_urls(knowledge, urls)
    con.register("_urls", table)
    return len(urls)


def extract_urls(knowledge: Knowledge, urls: pa.Array) -> pa.Table:
    """URL fields of distinct URLs, with the URL itself in ``_url``."""
    table = knowledge.extract(urls)
    if table.num_rows != len(urls):
        raise ConfigError(
            f"URL knowledge returned {table.num_rows} rows for {len(urls)} URLs",
            hint="this is a bug in the urls stage; please report it",
        )
    cols = {name: table.column(name) for name in table.column_names}
    for name, col in list(cols.items()):
        if not pa.types.is_string(col.type):
            cols[name] = pc.cast(col, pa.string())
    return pa.table({"_url": urls, **cols})


# -- Arrow rows → kernel arrays --------------------------------------------------------------


def rows_from_arrow(fs: FeatureSet, table: pa.Table) -> tuple[Rows, pa.Array]:
    """Kernel rows from a row table (any order); also the distinct entities (code → text).

    Rows are sorted by (entity, ts, event_id): ``event_id`` only breaks ties of
    the same entity at the same microsecond, the order every engine uses.
    """
    n = table.num_rows
    if n == 0:
        cols0 = {k: to_column(node.type, pa.nulls(0)) for k, node in fs.inputs.items()}
        empty = np.zeros(0, np.int64)
        return Rows(empty, empty, cols0), pa.array([], pa.string())
    encoded = pc.dictionary_encode(table.column("entity").combine_chunks())
    entities = encoded.dictionary
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int64)
    ts = np.asarray(table.column("ts").to_numpy(), np.int64)
    order = np.lexsort((ts, codes))
    codes, ts = codes[order], ts[order]
    tie = np.zeros(n, bool)
    tie[1:] = (codes[1:] == codes[:-1]) & (ts[1:] == ts[:-1])
    if tie.any():  # rare: order the tied rows by event_id
        tie[:-1] |= tie[1:]
        at = np.nonzero(tie)[0]
        ids = table.column("event_id").combine_chunks().take(pa.array(order[at]))
        rank = np.zeros(n, np.int64)
        rank[at] = np.argsort(np.asarray(pc.array_sort_indices(ids)))
        fix = np.lexsort((rank, ts, codes))
        order, codes, ts = order[fix], codes[fix], ts[fix]
    cols: dict[str, Column] = {}
    for i, (ref, node) in enumerate(fs.inputs.items()):
        # convert first, then permute numpy arrays: cheaper than reordering Arrow strings
        col = to_column(node.type, table.column(f"c{i}"))
        col.values = col.values[order]
        cols[ref] = col
    return Rows(codes, ts, cols), entities


def to_column(kind: str, arr: pa.Array | pa.ChunkedArray) -> Column:
    """A kernel column from an Arrow array of a checked expression's type."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if kind == "string":
        if not pa.types.is_string(arr.type):
            arr = pc.cast(arr, pa.string())
        uniq = pc.unique(arr.drop_null())
        uniq = uniq.take(pc.array_sort_indices(uniq))
        idx = pc.index_in(arr, value_set=uniq)
        codes = np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), np.int64)
        return Column("string", codes, uniq)
    if kind == "bool":
        vals = pc.cast(arr, pa.float64()) if len(arr) else pa.array([], pa.float64())
        return Column("bool", np.asarray(vals.fill_null(np.nan).to_numpy(), np.float64))
    if kind == "null":
        return Column("number", np.full(len(arr), np.nan))
    vals = pc.cast(arr, pa.float64())
    return Column("number", np.asarray(vals.fill_null(np.nan).to_numpy(), np.float64))


def entity_codes(entities: pa.Array, keys: pa.Array) -> np.ndarray:
    """Codes of ``keys`` in the sorted distinct ``entities`` (-1 where never seen)."""
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    if len(entities) == 0:
        return np.full(len(keys), -1, np.int64)
    idx = pc.index_in(keys, value_set=entities)
    return np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), np.int64)


def connect(tmp: str | os.PathLike[str] | None = None, *, memory_limit: str | None = None
            ) -> duckdb.DuckDBPyConnection:  # fmt: skip
    """A DuckDB connection set up for the engines (UTC, spill directory, memory limit)."""
    import duckdb

    con = duckdb.connect()
    con.sql("SET TimeZone = 'UTC'")
    con.sql("SET preserve_insertion_order = false")
    if tmp is not None:
        con.sql(f"SET temp_directory = {sql_string(str(tmp))}")
    if memory_limit:
        con.sql(f"SET memory_limit = {sql_string(memory_limit)}")
    return con
