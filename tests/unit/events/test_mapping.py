from datetime import UTC, datetime

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from clickloop.errors import InvalidInputError
from clickloop.events import PROPS_TYPE, Mapping
from clickloop.events.mapping import merge_maps

NOW = datetime(2026, 11, 2, tzinfo=UTC)


def test_renames_constants_formats_and_rest_into_props():
    m = Mapping.model_validate(
        {
            "columns": {
                "event_id": "id",
                "ts": {"from": "time", "format": "epoch_ms"},
                "user_id": "uid",
                "url": "page",
                "type": {"const": "page_view"},
            },
            "timezone": "Europe/Paris",
        }
    )
    table = pa.table(
        {
            "id": ["a", "b"],
            "time": [1_762_000_000_000, 1_762_000_001_000],
            "uid": ["u1", "u2"],
            "page": ["https://x.com/1", "https://x.com/2"],
            "ip": ["10.0.0.1", None],
            "country": ["FR", "DE"],
        }
    )
    v = m.validate_table(table, received_at=NOW)
    rows = v.events.to_pylist()
    assert [r["type"] for r in rows] == ["page_view", "page_view"]
    assert rows[0]["ts"] == datetime.fromtimestamp(1_762_000_000, UTC)
    assert rows[0]["props"] == [("ip", "10.0.0.1"), ("country", "FR")]
    assert rows[1]["props"] == [("country", "DE")]


def test_rest_columns_merge_with_an_existing_props_object():
    t = pa.table(
        {
            "event_id": ["a"],
            "ts": ["2026-11-01T00:00:00Z"],
            "type": ["click"],
            "user_id": ["u"],
            "props": ['{"item_id": "9"}'],
            "ab": ["x"],
        }
    )
    assert Mapping().validate_table(t, received_at=NOW).events.column("props").to_pylist() == [
        [("item_id", "9"), ("ab", "x")]
    ]


def test_bad_props_still_reported_when_rest_columns_exist():
    t = pa.table(
        {
            "event_id": ["a", "b"],
            "ts": ["2026-11-01T00:00:00Z"] * 2,
            "type": ["click"] * 2,
            "user_id": ["u"] * 2,
            "props": ["[1]", "{}"],
            "ab": ["x", "y"],
        }
    )
    v = Mapping().validate_table(t, received_at=NOW)
    assert v.reasons == ["bad_props"] and v.events.column("props").to_pylist() == [[("ab", "y")]]


def test_props_none_and_explicit_list():
    t = pa.table(
        {
            "event_id": ["a"],
            "ts": ["2026-11-01T00:00:00Z"],
            "type": ["click"],
            "user_id": ["u"],
            "ab": ["x"],
            "cd": ["y"],
        }
    )
    none = Mapping(props="none").validate_table(t, received_at=NOW).events
    assert none.column("props").to_pylist() == [None]
    some = Mapping(props=["cd"]).validate_table(t, received_at=NOW).events
    assert some.column("props").to_pylist() == [[("cd", "y")]]


def test_a_mapped_column_that_is_absent_names_what_is_there():
    m = Mapping.model_validate({"columns": {"user_id": "uid"}})
    with pytest.raises(InvalidInputError, match=r"column 'uid' .* not in the data") as info:
        m.apply(pa.table({"user": ["u"]}), where="partner.csv")
    assert "partner.csv" in str(info.value) and "user" in str(info.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"columns": {"user": "uid"}},
        {"columns": {"ts": {"from": "a", "const": 1}}},
        {"columns": {"ts": {"from": "a", "format": "unix"}}},
        {"timezone": "Mars/Base"},
    ],
)
def test_invalid_mappings_are_rejected(bad):
    with pytest.raises((ValidationError, ValueError)):
        Mapping.model_validate(bad)


entries = st.lists(st.tuples(st.text(max_size=3), st.text(max_size=3)), max_size=3)
maps = st.lists(st.one_of(st.none(), entries), min_size=1, max_size=8)


@given(maps, maps, st.integers(0, 3))
def test_merge_maps_equals_rowwise_concatenation(a, b, offset):
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    off = min(offset, n)
    ma = pa.array(a, PROPS_TYPE).slice(off)
    mb = pa.array(b, PROPS_TYPE).slice(off)
    got = merge_maps(ma, mb).to_pylist()
    want = [(x or []) + (y or []) for x, y in zip(a[off:], b[off:], strict=True)]
    assert got == want
