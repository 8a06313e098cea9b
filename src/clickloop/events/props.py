"""Normalise an event's ``props`` column, whatever its Arrow type, to ``map<string, string>``.

Inputs come as a map (Parquet, our own lake), a struct (pyarrow's JSON reader),
JSON text (CSV exports) or nothing at all. Scalars keep their JSON spelling
(``12.5``, ``true``); nested values are kept as compact JSON text, so nothing is
lost. A value that is not an object (a bare string, a list) marks the row *bad*.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from clickloop.events.schema import PROPS_TYPE


def normalize_props(values: pa.Array | pa.ChunkedArray) -> tuple[pa.MapArray, np.ndarray]:
    """Return ``(props as map<string,string>, bad mask)``.

    >>> m, bad = normalize_props(pa.array(['{"price": 12.5, "ok": true}', '[1]', None]))
    >>> m.to_pylist()[0], bad.tolist()
    ([('price', '12.5'), ('ok', 'true')], [False, True, False])
    """
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    n = len(arr)
    t = arr.type
    if pa.types.is_null(t):
        return pa.nulls(n, PROPS_TYPE), np.zeros(n, bool)
    if pa.types.is_map(t):
        return _from_map(arr), np.zeros(n, bool)
    if pa.types.is_struct(t):
        return _from_struct(arr), np.zeros(n, bool)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        return _from_json_text(arr)
    bad = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False))
    return pa.nulls(n, PROPS_TYPE), bad


def to_text(arr: pa.Array) -> pa.Array:
    """Arrow values as strings in their JSON spelling (nested values as JSON text)."""
    t = arr.type
    if pa.types.is_string(t):
        return arr
    if pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return arr.cast(pa.string())
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t):
        return arr.cast(pa.string())
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_decimal(t):
        return pa.array([None if v is None else str(v) for v in arr.to_pylist()], pa.string())
    return pa.array([_json_text(v) for v in arr.to_pylist()], pa.string())


def _json_text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, list) and v and all(isinstance(x, tuple) and len(x) == 2 for x in v):
        v = dict(v)  # an Arrow map comes back as a list of pairs
    return orjson.dumps(v, default=str).decode()


def _from_map(arr: pa.MapArray) -> pa.MapArray:
    if arr.type == PROPS_TYPE:
        return arr
    keys = to_text(arr.keys)
    items = to_text(arr.items)
    offsets = arr.offsets
    if arr.offset or arr.null_count:
        mask = arr.is_null()
        return pa.MapArray.from_arrays(offsets, keys, items, type=PROPS_TYPE, mask=mask)
    return pa.MapArray.from_arrays(offsets, keys, items, type=PROPS_TYPE)


def _from_struct(arr: pa.StructArray) -> pa.MapArray:
    n = len(arr)
    names = [arr.type.field(i).name for i in range(arr.type.num_fields)]
    k = len(names)
    if k == 0:
        return pa.MapArray.from_arrays(
            np.zeros(n + 1, np.int32),
            pa.array([], pa.string()),
            pa.array([], pa.string()),
            type=PROPS_TYPE,
        )
    children = [arr.field(i) for i in range(k)]
    row_null = np.asarray(arr.is_null().to_numpy(zero_copy_only=False))
    texts = [to_text(c) for c in children]
    present = (
        np.stack([~np.asarray(c.is_null().to_numpy(zero_copy_only=False)) for c in texts], axis=1)
        & ~row_null[:, None]
    )
    # Column-major concatenation, then take row-major positions of present values; the
    # keys are the field names taken the same way (no Python string per entry)
    flat = pa.concat_arrays(texts)
    rows, cols = np.nonzero(present)
    values = flat.take(pa.array(cols * n + rows, pa.int64()))
    keys = pa.array(names, pa.string()).take(pa.array(cols, pa.int64()))
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    mask = pa.array(row_null) if row_null.any() else None
    return pa.MapArray.from_arrays(pa.array(offsets), keys, values, type=PROPS_TYPE, mask=mask)


def _from_json_text(arr: pa.Array) -> tuple[pa.MapArray, np.ndarray]:
    n = len(arr)
    bad = np.zeros(n, bool)
    rows: list[list[tuple[str, str | None]] | None] = []
    for i, raw in enumerate(arr.to_pylist()):
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            rows.append(None)
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            bad[i] = True
            rows.append(None)
            continue
        rows.append([(str(key), _scalar_text(v)) for key, v in obj.items() if v is not None])
    return pa.array(rows, PROPS_TYPE), bad


def _scalar_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    return orjson.dumps(v).decode()  # numbers, booleans, nested values: their JSON spelling


def props_from_columns(table: pa.Table, columns: list[str]) -> pa.MapArray:
    """Fold named columns of ``table`` into one props map (nulls omitted)."""
    if not columns:
        return pa.nulls(table.num_rows, PROPS_TYPE)
    struct = pa.StructArray.from_arrays(
        [table.column(c).combine_chunks() for c in columns], names=columns
    )
    return _from_struct(struct)
