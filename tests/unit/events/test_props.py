import pyarrow as pa

from clickloop.events.props import normalize_props
from clickloop.events.schema import PROPS_TYPE


def test_struct_from_a_json_reader_becomes_a_map_without_nulls():
    arr = pa.array([{"a": 1, "b": None, "c": {"d": True}}, None, {"a": None, "b": "x", "c": None}])
    m, bad = normalize_props(arr)
    assert m.type == PROPS_TYPE and not bad.any()
    assert m.to_pylist() == [[("a", "1"), ("c", '{"d":true}')], None, [("b", "x")]]


def test_maps_of_other_value_types_are_spelt_as_json():
    arr = pa.array([[("p", 1.5), ("q", 2.0)]], pa.map_(pa.string(), pa.float64()))
    assert normalize_props(arr)[0].to_pylist() == [[("p", "1.5"), ("q", "2")]]


def test_json_text_objects_and_bad_values():
    m, bad = normalize_props(pa.array(['{"x": "1", "n": null}', "nope", "[]", "", None]))
    assert m.to_pylist()[0] == [("x", "1")]
    assert bad.tolist() == [False, True, True, False, False]


def test_other_types_are_bad_unless_null():
    _m, bad = normalize_props(pa.array([1, None]))
    assert bad.tolist() == [True, False]
