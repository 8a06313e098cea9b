"""Feature rows from a batch of events in memory (the streaming side of :mod:`.source`).

The same filter, derived columns and entity as the batch engine's SQL, evaluated
with Arrow compute (:func:`clickloop.features.expr.evaluate`), and URL fields
looked up through :class:`UrlCache`, which asks the URL knowledge only about
URLs it has not seen before — a stream sees the same pages again and again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clickloop.events.schema import UTC_US
from clickloop.features.definition import FeatureSet
from clickloop.features.source import Knowledge
from clickloop.features.translate import evaluate


class UrlCache:
    """URL fields per distinct URL, remembered across batches (bounded; cleared when full).

    >>> cache = UrlCache(knowledge)                                  # doctest: +SKIP
    >>> cache.lookup(events.column("url")).column("category")
    """

    def __init__(self, knowledge: Knowledge, *, max_entries: int = 500_000) -> None:
        self.knowledge = knowledge
        self.max_entries = max_entries
        self._pos: dict[str, int] = {}
        self._chunks: list[pa.Table] = []
        self._table: pa.Table | None = None
        self.lookups = 0
        self.misses = 0

    def lookup(self, urls: pa.Array | pa.ChunkedArray) -> pa.Table:
        """Fields for each URL, row for row (null URL → nulls)."""
        if isinstance(urls, pa.ChunkedArray):
            urls = urls.combine_chunks()
        uniq = pc.unique(urls.drop_null())
        values = uniq.to_pylist()
        self.lookups += len(values)
        new = [u for u in values if u not in self._pos]
        if len(self._pos) + len(new) > self.max_entries:
            self._pos.clear()
            self._chunks.clear()
            self._table = None
            new = values
        if new:
            self.misses += len(new)
            got = self.knowledge.extract(pa.array(new, pa.string()))
            got = pa.table({c: pc.cast(got.column(c), pa.string()) for c in got.column_names})
            base = len(self._pos)
            for i, u in enumerate(new):
                self._pos[u] = base + i
            self._chunks.append(got)
            self._table = None
        if self._table is None:
            if not self._chunks:
                names = self.knowledge.extract(pa.array([], pa.string())).column_names
                return pa.table({c: pa.nulls(len(urls), pa.string()) for c in names})
            self._table = pa.concat_tables(self._chunks).combine_chunks()
            self._chunks = [self._table]
        pos = self._pos
        where = np.fromiter(
            (pos[u] if u is not None else -1 for u in urls.to_pylist()), np.int64, len(urls)
        )
        idx = pa.array(where, mask=where < 0)
        return self._table.take(idx)


def resolver(fs: FeatureSet, events: pa.Table, urls: pa.Table | None
             ) -> Callable[[str], pa.Array]:  # fmt: skip
    """Column lookup for :func:`evaluate`: canonical, ``props.X``, ``url.X`` and derived."""
    done: dict[str, pa.Array] = {}
    n = events.num_rows

    def get(ref: str) -> pa.Array:
        if ref in done:
            return done[ref]
        if ref in fs.derive:
            out = evaluate(fs.derive[ref], get, n)
        elif ref.startswith("props."):
            props = events.column("props").combine_chunks()
            out = pc.map_lookup(props, pa.scalar(ref[6:]), "first")
        elif ref.startswith("url."):
            name = ref[4:]
            if urls is None or name not in urls.column_names:
                out = pa.nulls(n, pa.string())
            else:
                out = urls.column(name).combine_chunks()
        else:
            out = events.column(ref).combine_chunks()
        done[ref] = out
        return out

    return get


def prepare(
    fs: FeatureSet, events: pa.Table, urls: pa.Table | None = None, *, carry: Sequence[str] = ()
) -> pa.Table:
    """A set's rows from canonical events: ``entity``, ``ts`` (µs), ``event_id``, inputs ``c<i>``.

    Rows failing the filter or without an entity are left out; order is kept.
    ``carry`` names event columns copied through (after the inputs).
    """
    n = events.num_rows
    get = resolver(fs, events, urls)
    keep: Any = None
    if fs.where is not None:
        keep = pc.fill_null(evaluate(fs.where, get, n), False)
    parts = [pc.cast(get(ref), pa.string()) for ref in fs.entity]
    if len(parts) == 1:
        entity = parts[0]
    else:
        entity = pc.binary_join_element_wise(*parts, "|", null_handling="emit_null")
    has_entity = pc.is_valid(entity)
    keep = has_entity if keep is None else pc.and_(keep, has_entity)
    cols: dict[str, Any] = {
        "entity": entity,
        "ts": pc.cast(pc.cast(events.column("ts"), UTC_US), pa.int64()),
        "event_id": events.column("event_id"),
    }
    for i, node in enumerate(fs.inputs.values()):
        cols[f"c{i}"] = evaluate(node, get, n)
    for name in carry:
        cols[name] = events.column(name)
    table = pa.table(cols)
    return table.filter(keep)
