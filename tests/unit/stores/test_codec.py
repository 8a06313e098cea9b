"""The binary row codec: exact round trips, content-addressed schema ids, clear refusals."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from clickloop.errors import DataError, InvalidInputError
from clickloop.stores.codec import HEADER, RowCodec, record_sid, record_ts

TS_US = 1_795_000_000_123_456


def encode(table: pa.Table, ts: int = TS_US) -> tuple[RowCodec, list[bytes]]:
    codec = RowCodec.from_arrow(table.schema)
    return codec, codec.encode(table, np.full(table.num_rows, ts, np.int64)).to_pylist()


def test_a_numeric_row_is_a_fixed_width_record_with_a_header():
    table = pa.table({f"c{i}": pa.array([i], pa.int64()) for i in range(25)} | {
        f"m{i}": pa.array([i / 7]) for i in range(25)})  # fmt: skip
    codec, (blob,) = encode(table)
    assert len(blob) == HEADER.size + 50 * 8  # 414 bytes for 50 features: no names, no text
    version, flags, sid, ts = HEADER.unpack_from(blob)
    assert (version, flags, ts) == (1, 0, TS_US)
    assert sid == codec.sid == record_sid(blob) == xxhash.xxh32_intdigest(codec.schema_json)
    assert record_ts(blob) == TS_US
    assert codec.decode(blob) == {
        **{f"c{i}": i for i in range(25)},
        **{f"m{i}": i / 7 for i in range(25)},
    }


def test_schema_ids_are_content_addressed():
    a = RowCodec.from_arrow(pa.schema([("x", pa.int64()), ("y", pa.string())]))
    b = RowCodec.from_arrow(pa.schema([("x", pa.int64()), ("y", pa.string())]))
    assert a.sid == b.sid  # two writers agree without coordination
    assert a.sid != RowCodec.from_arrow(pa.schema([("y", pa.string()), ("x", pa.int64())])).sid
    assert a.sid != RowCodec.from_arrow(pa.schema([("x", pa.int32()), ("y", pa.string())])).sid
    rebuilt = RowCodec.from_json(a.schema_json)
    assert rebuilt.sid == a.sid and rebuilt.names == a.names


def test_records_from_a_newer_format_are_refused_not_misread():
    _, (blob,) = encode(pa.table({"x": [1]}))
    with pytest.raises(DataError, match="format version 2"):
        record_sid(bytes([2]) + blob[1:])
    with pytest.raises(DataError, match="format version 9"):
        RowCodec.from_json(b'{"v": 9, "columns": []}')


def test_nulls_in_fixed_features_use_a_bitmap_only_when_a_batch_has_nulls():
    table = pa.table(
        {f"c{i}": pa.array([i, None if i % 3 == 0 else i], pa.int64()) for i in range(11)}
    )
    codec, (full, holey) = encode(table)
    assert full[1] == 1 and holey[1] == 3  # bitmap present in both; row 2 has nulls
    assert len(full) == HEADER.size + 11 * 8 + 2
    assert codec.decode(full) == {f"c{i}": i for i in range(11)}
    assert codec.decode(holey) == {f"c{i}": None if i % 3 == 0 else i for i in range(11)}


def test_variable_length_features_follow_the_fixed_ones_as_json():
    table = pa.table({"name": ["a"], "n": [1], "top": [["x", "y"]], "flag": [True]})
    codec, (blob,) = encode(table)
    assert codec.names == ("n", "flag", "name", "top")
    assert blob.endswith(b'["a",["x","y"]]')
    assert codec.decode(blob) == {"n": 1, "flag": True, "name": "a", "top": ["x", "y"]}


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (pa.array([Decimal("1.5")]), "(?s)decimal128.*cast decimals to float64"),
        (pa.array([b"\x00"]), "type binary"),
        (pa.array([[datetime(2026, 1, 1, tzinfo=UTC)]]), "list<item: timestamp"),
        (pa.array([[(1, 2)]], pa.map_(pa.int64(), pa.int64())), "map<int64, int64>"),
    ],
)
def test_types_the_store_cannot_hold_exactly_are_refused_by_name(values, match):
    with pytest.raises(InvalidInputError, match=match) as err:
        RowCodec.from_arrow(pa.table({"feat": values}).schema)
    assert "feat" in str(err.value)


def test_duplicate_feature_names_are_refused():
    with pytest.raises(InvalidInputError, match="'x' appears twice"):
        RowCodec.from_arrow(pa.schema([("x", pa.int64()), ("x", pa.float64())]))


NUMERIC = {
    "i8": (pa.int8(), st.integers(-128, 127)),
    "u16": (pa.uint16(), st.integers(0, 2**16 - 1)),
    "i32": (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    "u64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "f16": (pa.float16(), st.floats(width=16)),
    "f64": (pa.float64(), st.floats()),
    "b": (pa.bool_(), st.booleans()),
    "s": (pa.string(), st.text(max_size=6)),
}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


@given(st.data(), st.lists(st.sampled_from(sorted(NUMERIC)), min_size=1, max_size=12, unique=True),
       st.integers(1, 6))  # fmt: skip
def test_any_mix_of_types_and_nulls_round_trips(data, names, n):
    cols = {}
    for name in names:
        values = NUMERIC[name][1]
        cols[name] = data.draw(st.lists(st.one_of(st.none(), values), min_size=n, max_size=n))
    if "f16" in cols:
        cols["f16"] = [None if v is None else np.float16(v) for v in cols["f16"]]
    table = pa.table({k: pa.array(v, NUMERIC[k][0]) for k, v in cols.items()})
    codec, blobs = encode(table)
    for i, blob in enumerate(blobs):
        got = codec.decode(blob)
        want = {k: table.column(k)[i].as_py() for k in names}
        assert list(got) == list(codec.names)
        assert all(_same(got[k], want[k]) for k in names), (got, want)


def test_sliced_and_chunked_input_encodes_the_rows_it_shows():
    table = pa.concat_tables(
        [pa.table({"x": [1, 2], "t": ["a", "b"]}), pa.table({"x": [3, 4], "t": ["c", None]})]
    )
    part = table.slice(1, 3)
    codec, blobs = encode(part)
    assert [codec.decode(b) for b in blobs] == [
        {"x": 2, "t": "b"},
        {"x": 3, "t": "c"},
        {"x": 4, "t": None},
    ]
    assert struct.unpack_from("<q", blobs[0], 6)[0] == TS_US
