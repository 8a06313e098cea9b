"""Row encoding of the online store: one compact binary record per (feature set, entity).

Both backends store the same bytes, so a value written through SQLite and one
written through Redis decode identically. A record is::

    header   <BBIq   format version (1), flags, schema id, event time (µs since epoch)
    fixed    <…      every fixed-width feature, packed (struct codes: ? b B h H i I q Q e f d)
    bitmap   k bits  validity of the fixed features (only when flags has HAS_BITMAP)
    varlen   JSON    array of the variable-length features (strings, lists, structs, maps)

Why this layout (measured in ``bench/bench_online.py``): materialisation is the
hot write path, and a fixed-width record is built for a whole Arrow batch at
once with numpy (no Python object per value), while a JSON row needs one Python
object per value and one ``dumps`` per row — several times slower and about 60 %
larger for numeric features. Reading one row is a single ``struct.unpack_from``
(about as fast as ``orjson.loads``). Floats keep NaN and ±inf, ints stay ints,
bools stay bools, timestamps come back as ``datetime``.

The schema id is a hash of the schema's canonical JSON (content-addressed), so
writers in different processes agree on ids without coordination and a reader's
cache of decoders never goes stale. Schemas are stored beside the rows.

>>> codec = RowCodec.from_arrow(pa.schema([("clicks_1d", pa.int64())]))
>>> blob = codec.encode(table.select(["clicks_1d"]), ts_us)[0]      # doctest: +SKIP
>>> codec.decode(blob)                                                # doctest: +SKIP
{'clicks_1d': 3}
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from clickloop.errors import DataError, InvalidInputError
from clickloop.stores.jsonvec import json_text

FORMAT_VERSION: Final = 1
HEADER: Final = struct.Struct("<BBIq")
HAS_BITMAP: Final = 1  # the record carries a validity bitmap of its fixed features
HAS_NULLS: Final = 2  # … and at least one of them is null in this row

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)  # naive timestamps read back naive
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

# struct code → numpy dtype of the same width and byte order
_NUMPY: Final = {
    "?": "?", "b": "i1", "B": "u1", "h": "<i2", "H": "<u2", "i": "<i4", "I": "<u4",
    "q": "<i8", "Q": "<u8", "e": "<f2", "f": "<f4", "d": "<f8",
}  # fmt: skip
_INT_CODES: Final = {
    pa.int8(): "b", pa.uint8(): "B", pa.int16(): "h", pa.uint16(): "H",
    pa.int32(): "i", pa.uint32(): "I", pa.int64(): "q", pa.uint64(): "Q",
    pa.float16(): "e", pa.float32(): "f", pa.float64(): "d", pa.bool_(): "?",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Column:
    """One feature of a schema: its name, how it is stored and how it reads back.

    ``kind`` is ``num`` (int/float/bool), ``ts`` (timestamp with zone → aware
    datetime), ``ts_naive``, ``date``, ``duration`` (fixed width), or ``str``,
    ``json``, ``null`` (variable length).
    """

    name: str
    kind: str
    code: str  # struct code for fixed-width kinds, "" for variable-length ones
    arrow: str  # the Arrow type as written, for people (`info`) and error messages

    @property
    def fixed(self) -> bool:
        return bool(self.code)


def _nested_ok(t: pa.DataType) -> bool:
    """Nested values travel as JSON: only JSON-representable leaves are allowed."""
    if pa.types.is_dictionary(t):
        return _nested_ok(t.value_type)
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
    ):
        return _nested_ok(t.value_type)
    if pa.types.is_struct(t):
        return all(_nested_ok(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _is_string(t.key_type) and _nested_ok(t.item_type)
    return (
        pa.types.is_null(t)
        or pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or _is_string(t)
    )


def _is_string(t: pa.DataType) -> bool:
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or (pa.types.is_dictionary(t) and _is_string(t.value_type))
    )


def _has_map(t: pa.DataType) -> bool:
    if pa.types.is_map(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_map(t.field(i).type) for i in range(t.num_fields))
    vt = getattr(t, "value_type", None)
    return vt is not None and _has_map(vt)


def column_for(field: pa.Field) -> Column:
    """How a feature column of this Arrow type is stored, or a clear error."""
    t, name = field.type, field.name
    if pa.types.is_dictionary(t):
        t = t.value_type
    if t in _INT_CODES:
        return Column(name, "num", _INT_CODES[t], str(field.type))
    if pa.types.is_timestamp(t):
        return Column(name, "ts" if t.tz else "ts_naive", "q", str(field.type))
    if pa.types.is_date(t):
        return Column(name, "date", "i", str(field.type))
    if pa.types.is_duration(t):
        return Column(name, "duration", "q", str(field.type))
    if _is_string(t):
        return Column(name, "str", "", str(field.type))
    if pa.types.is_null(t):
        return Column(name, "null", "", "null")
    if _nested_ok(t):
        return Column(name, "json", "", str(field.type))
    raise InvalidInputError(
        f"feature {name!r} has type {field.type}, which the online store cannot hold",
        hint="use bool, integer, float, string, timestamp, date, duration, or lists/structs/"
        "maps (string keys) of bool/integer/float/string; cast decimals to float64 and "
        "binary to base64 strings",
        feature=name,
        type=str(field.type),
    )


def _to_numpy(col: pa.ChunkedArray, c: Column) -> np.ndarray:
    """Fixed-width values as numpy (nulls as 0; the bitmap says which were null)."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
    if c.kind in ("ts", "ts_naive"):
        col = pc.cast(col, pa.timestamp("us", col.type.tz), safe=False).cast(pa.int64())
    elif c.kind == "date":
        col = pc.cast(col, pa.date32()).cast(pa.int32())
    elif c.kind == "duration":
        col = pc.cast(col, pa.duration("us"), safe=False).cast(pa.int64())
    if col.null_count:
        col = col.fill_null(False if c.code == "?" else 0)
    return col.to_numpy()


def _maps_to_dicts(value: Any, t: pa.DataType) -> Any:
    """``to_pylist`` spells maps as lists of pairs; the store hands out dicts."""
    if value is None:
        return None
    if pa.types.is_map(t):
        return {k: _maps_to_dicts(v, t.item_type) for k, v in value}
    if pa.types.is_struct(t):
        return {
            f.name: _maps_to_dicts(value[f.name], f.type)
            for f in (t.field(i) for i in range(t.num_fields))
        }
    vt = getattr(t, "value_type", None)
    if vt is not None and isinstance(value, list):
        return [_maps_to_dicts(v, vt) for v in value]
    return value


def _to_pylist(col: pa.ChunkedArray, c: Column) -> list[Any]:
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = t.value_type
    if pa.types.is_string_view(t):
        col = col.cast(pa.string())
    values = col.to_pylist()
    if c.kind == "json" and _has_map(t):
        values = [_maps_to_dicts(v, t) for v in values]
    return values


def _lit(text: str) -> pa.Scalar:
    return pa.scalar(text.encode(), pa.large_binary())


def _timestamp(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _timestamp_naive(us: int) -> datetime:
    return _EPOCH_NAIVE + timedelta(microseconds=us)


def _date(days: int) -> date:
    return date.fromordinal(_EPOCH_ORDINAL + days)


def _duration(us: int) -> timedelta:
    return timedelta(microseconds=us)


_FIXUPS: Final[dict[str, Callable[[int], Any]]] = {
    "ts": _timestamp,
    "ts_naive": _timestamp_naive,
    "date": _date,
    "duration": _duration,
}


class RowCodec:
    """One version of a feature set's schema: encodes Arrow batches, decodes one record.

    Instances are immutable and shared across threads.

    >>> codec = RowCodec.from_arrow(pa.schema([("n", pa.int64()), ("top", pa.list_(pa.string()))]))
    >>> codec.names
    ('n', 'top')
    """

    def __init__(self, columns: Sequence[Column]) -> None:
        seen: set[str] = set()
        for c in columns:
            if c.name in seen:
                raise InvalidInputError(f"feature {c.name!r} appears twice in the rows")
            seen.add(c.name)
        self.columns: tuple[Column, ...] = tuple(columns)
        self.fixed = tuple(c for c in columns if c.fixed)
        self.var = tuple(c for c in columns if not c.fixed)
        # decoded values come out fixed first, then variable-length
        self.names: tuple[str, ...] = tuple(c.name for c in (*self.fixed, *self.var))
        self._struct = struct.Struct("<" + "".join(c.code for c in self.fixed))
        self._fixed_end = HEADER.size + self._struct.size
        self._bitmap_bytes = (len(self.fixed) + 7) // 8
        self._fixups = tuple((c.name, _FIXUPS[c.kind]) for c in self.fixed if c.kind in _FIXUPS)
        self._n_fixed = len(self.fixed)
        self.schema_json: bytes = orjson.dumps(
            {"v": FORMAT_VERSION, "columns": [[c.name, c.kind, c.code, c.arrow] for c in columns]}
        )
        self.sid: int = xxhash.xxh32_intdigest(self.schema_json)

    @classmethod
    def from_arrow(cls, schema: pa.Schema) -> RowCodec:
        """The codec for feature columns of this Arrow schema (no entity / event-time columns)."""
        return cls([column_for(f) for f in schema])

    @classmethod
    def from_json(cls, data: bytes | str) -> RowCodec:
        """Rebuild a codec from its stored :attr:`schema_json`."""
        doc = orjson.loads(data)
        if doc.get("v") != FORMAT_VERSION:
            raise DataError(
                f"online store schema has format version {doc.get('v')}, this clickloop "
                f"reads version {FORMAT_VERSION}",
                hint="upgrade clickloop, or delete and re-materialise the feature set",
            )
        return cls([Column(*c) for c in doc["columns"]])

    # -- writing ---------------------------------------------------------------------

    def encode(self, features: pa.Table, ts_us: np.ndarray) -> pa.LargeBinaryArray:
        """One record per row of ``features``, as one Arrow binary array (no per-row objects)."""
        n = features.num_rows
        cols = [features.column(c.name) for c in self.fixed]
        any_nulls = any(col.null_count for col in cols)
        fields: list[tuple[str, str]] = [("ver", "u1"), ("flags", "u1"), ("sid", "<u4"),
                                         ("ts", "<i8")]  # fmt: skip
        fields += [(f"c{i}", _NUMPY[c.code]) for i, c in enumerate(self.fixed)]
        if any_nulls:
            fields.append(("bitmap", f"V{self._bitmap_bytes}"))
        rec = np.empty(n, dtype=np.dtype(fields))
        rec["ver"] = FORMAT_VERSION
        rec["sid"] = self.sid
        rec["ts"] = ts_us
        for i, (col, c) in enumerate(zip(cols, self.fixed, strict=True)):
            rec[f"c{i}"] = _to_numpy(col, c)
        if any_nulls:
            valid = np.ones((n, len(cols)), dtype=bool)
            for i, col in enumerate(cols):
                if col.null_count:
                    valid[:, i] = col.is_valid().to_numpy(zero_copy_only=False)
            bits = np.packbits(valid, axis=1, bitorder="little")
            rec["bitmap"] = bits.view(f"V{self._bitmap_bytes}").reshape(n)
            has_nulls = ~valid.all(axis=1)
            rec["flags"] = HAS_BITMAP | (has_nulls.astype(np.uint8) * HAS_NULLS)
        else:
            rec["flags"] = 0
        width = rec.dtype.itemsize
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
        fixed = pa.Array.from_buffers(
            pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(rec.view(np.uint8))]
        )
        if not self.var:
            return fixed
        parts: list[pa.Array | pa.Scalar] = [fixed, _lit("[")]
        for i, c in enumerate(self.var):
            if i:
                parts.append(_lit(","))
            parts.append(self._json(features.column(c.name), c))
        parts.append(_lit("]"))
        return pc.binary_join_element_wise(*parts, _lit(""))

    @staticmethod
    def _json(col: pa.ChunkedArray, c: Column) -> pa.Array:
        """JSON text of one variable-length column: Arrow kernels, else orjson per value."""
        text = json_text(col)
        if text is not None:
            return text.cast(pa.large_binary())
        dumps = orjson.dumps
        try:
            return pa.array([dumps(v) for v in _to_pylist(col, c)], pa.large_binary())
        except TypeError as exc:  # e.g. an integer beyond 64 bits inside a list
            raise InvalidInputError(f"cannot encode a value of feature {c.name!r}: {exc}") from exc

    # -- reading ---------------------------------------------------------------------

    def decode(self, blob: bytes) -> dict[str, Any]:
        """The features of one record, keyed by name (fixed-width features first)."""
        flags = blob[1]
        if not flags and not self.var:
            # zip without strict=: the hot path, and the schema fixes both lengths
            out = dict(zip(self.names, self._struct.unpack_from(blob, HEADER.size)))  # noqa: B905
        else:
            values: list[Any] = list(self._struct.unpack_from(blob, HEADER.size))
            end = self._fixed_end
            if flags & HAS_BITMAP:
                if flags & HAS_NULLS:
                    bits = int.from_bytes(blob[end : end + self._bitmap_bytes], "little")
                    for i in range(self._n_fixed):
                        if not (bits >> i) & 1:
                            values[i] = None
                end += self._bitmap_bytes
            if self.var:
                values.extend(orjson.loads(blob[end:]))
            out = dict(zip(self.names, values))  # noqa: B905
        for name, fix in self._fixups:
            v = out[name]
            if v is not None:
                out[name] = fix(v)
        return out


def record_sid(blob: bytes) -> int:
    """The schema id in a record's header (which codec decodes it)."""
    if not blob or blob[0] != FORMAT_VERSION:
        raise DataError(
            f"online store record has format version {blob[0] if blob else None}, this "
            f"clickloop reads version {FORMAT_VERSION}",
            hint="upgrade clickloop, or delete and re-materialise the feature set",
        )
    return int(HEADER.unpack_from(blob)[2])


def record_ts(blob: bytes) -> int:
    """The event time (µs since the epoch) in a record's header."""
    return int(HEADER.unpack_from(blob)[3])
