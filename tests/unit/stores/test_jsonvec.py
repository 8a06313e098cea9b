"""The vectorised JSON spelling equals orjson's, value for value, for every supported type."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickloop.stores.jsonvec import json_text


def _orjson(values: pa.Array) -> list[Any]:
    """What orjson makes of the same values (maps as dicts, like the store)."""
    out = []
    for v in values.to_pylist():
        out.append(orjson.loads(orjson.dumps(_maps(v, values.type))))
    return out


def _maps(v: Any, t: pa.DataType) -> Any:
    if v is None:
        return None
    if pa.types.is_map(t):
        return {k: _maps(x, t.item_type) for k, x in v}
    if pa.types.is_struct(t):
        return {f.name: _maps(v[f.name], f.type) for f in t}
    if isinstance(v, list):
        return [_maps(x, t.value_type) for x in v]
    return v


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def assert_matches_orjson(values: pa.Array) -> None:
    text = json_text(values)
    assert text is not None
    ours = [orjson.loads(t) for t in text.to_pylist()]
    theirs = _orjson(values)
    assert all(_same(a, b) for a, b in zip(ours, theirs, strict=True)), (ours, theirs)


texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
floats = st.floats(allow_nan=True, allow_infinity=True)
ints = st.integers(-(2**63), 2**63 - 1)


@given(st.lists(st.one_of(st.none(), texts), max_size=20))
def test_strings_escape_quotes_backslashes_and_control_characters(values):
    assert_matches_orjson(pa.array(values, pa.string()))
    assert_matches_orjson(pa.array(values, pa.large_string()))


@given(st.lists(st.one_of(st.none(), floats), max_size=20))
def test_floats_keep_their_shortest_round_trip_form_and_stay_floats(values):
    assert_matches_orjson(pa.array(values, pa.float64()))


@given(st.lists(st.one_of(st.none(), st.floats(width=32)), max_size=20))
def test_float32_is_spelt_as_the_float64_python_sees(values):
    assert_matches_orjson(pa.array(values, pa.float32()))


@given(
    st.lists(st.one_of(st.none(), ints), max_size=20),
    st.lists(st.one_of(st.none(), st.booleans()), max_size=20),
)
def test_integers_and_booleans(i, b):
    assert_matches_orjson(pa.array(i, pa.int64()))
    assert_matches_orjson(pa.array(b, pa.bool_()))


text_lists = st.lists(
    st.one_of(st.none(), st.lists(st.one_of(st.none(), texts), max_size=5)), max_size=15
)
int_maps = st.dictionaries(texts, st.one_of(st.none(), ints), max_size=4)
records = st.fixed_dictionaries(
    {
        "k": st.one_of(st.none(), texts),
        "n": st.one_of(st.none(), floats),
        "l": st.lists(ints, max_size=3),
    }
)


@given(text_lists, st.integers(0, 5), st.integers(0, 5))
def test_lists_including_sliced_arrays(values, start, cut):
    arr = pa.array(values, pa.list_(pa.string()))
    assert_matches_orjson(arr)
    assert_matches_orjson(arr.slice(min(start, len(arr)), max(0, len(arr) - start - cut)))
    assert_matches_orjson(pa.array(values, pa.large_list(pa.string())))


@given(st.lists(st.one_of(st.none(), int_maps), max_size=15), st.integers(0, 4))
def test_string_keyed_maps_become_objects(values, start):
    arr = pa.array(
        [None if v is None else list(v.items()) for v in values], pa.map_(pa.string(), pa.int64())
    )
    assert_matches_orjson(arr)
    assert_matches_orjson(arr.slice(min(start, len(arr))))


@given(st.lists(st.one_of(st.none(), records), max_size=15), st.integers(0, 4))
def test_structs_with_nested_lists(values, start):
    t = pa.struct([("k", pa.string()), ("n", pa.float64()), ("l", pa.list_(pa.int64()))])
    arr = pa.array(values, t)
    assert_matches_orjson(arr)
    assert_matches_orjson(arr.slice(min(start, len(arr))))


def test_lists_of_lists_fixed_size_lists_and_dictionaries():
    assert_matches_orjson(pa.array([[[1, 2], None, []], None, [[3]]]))
    assert_matches_orjson(pa.array([[1.5, None], [2.0, 3.0]], pa.list_(pa.float64(), 2)))
    assert_matches_orjson(pa.array(["a", None, "b", "a"]).dictionary_encode())
    assert_matches_orjson(pa.chunked_array([pa.array(["x"]), pa.array(['"y"'])]))
    assert_matches_orjson(pa.nulls(3))


@pytest.mark.parametrize(
    "arr",
    [
        pa.array([[(1, "a")]], pa.map_(pa.int64(), pa.string())),  # JSON keys must be strings
        pa.array([b"\x00"], pa.binary()),
        pa.array([{}], pa.struct([])),
    ],
)
def test_types_without_a_kernel_return_none_so_the_caller_falls_back(arr):
    assert json_text(arr) is None
