"""JSON record parsing: fast when the input is clean, and never losing a record when it is not."""

from __future__ import annotations

import json

import orjson
from hypothesis import given
from hypothesis import strategies as st

from clickloop.ingest.parse import line_bounds, parse_lines, parse_messages

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
objects = st.dictionaries(
    st.sampled_from(["event_id", "ts", "type", "user_id", "url", "props", "x", "y"]),
    values,
    max_size=6,
)
record = st.one_of(
    objects.map(lambda o: json.dumps(o).encode()),
    values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=20).filter(lambda b: b"\n" not in b),
    st.text(max_size=20).filter(lambda t: "\n" not in t).map(str.encode),
)


def _outcome_of(raw: bytes) -> str:
    if not raw.strip(b" \t\r\n"):
        return "blank"
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "unparseable"
    return "object" if isinstance(value, dict) else "not_an_object"


@given(st.lists(record, max_size=30))
def test_every_line_is_a_row_or_a_reject_exactly_once(lines):
    data = b"\n".join(lines) + b"\n"
    parsed = parse_lines(data)
    expected = [_outcome_of(line) for line in lines]
    nonblank = [e for e in expected if e != "blank"]
    assert parsed.records == len(nonblank)
    rows = [int(i) for t, idx in parsed.pieces for i in (range(t.num_rows) if idx is None else idx)]
    rejected = {r: reason for r, reason, _ in parsed.rejects}
    assert sorted(rows + list(rejected)) == list(range(parsed.records))
    for i, kind in enumerate(nonblank):
        if kind == "object":
            assert i in rows or rejected.get(i) == "unparseable"  # only untypeable JSON
        else:
            assert rejected[i] == kind


@given(st.lists(objects, min_size=1, max_size=20))
def test_objects_are_never_lost_whatever_their_types(objs):
    data = b"".join(json.dumps(o).encode() + b"\n" for o in objs)
    parsed = parse_lines(data)
    rows = sum(t.num_rows for t, _ in parsed.pieces)
    assert rows + len(parsed.rejects) == len(objs)
    assert all(reason == "unparseable" for _, reason, _ in parsed.rejects)


def test_clean_input_is_one_table_in_order():
    data = b'{"event_id":"a","n":1}\n{"event_id":"b","n":2}\n'
    parsed = parse_lines(data)
    assert len(parsed.pieces) == 1 and parsed.pieces[0][1] is None
    assert parsed.pieces[0][0].column("event_id").to_pylist() == ["a", "b"]


def test_a_bad_line_among_good_ones_costs_only_itself():
    data = b'{"event_id":"a"}\n{"event_id":\n{"event_id":"c"}\n"just a string"\n'
    parsed = parse_lines(data)
    assert [(r, reason) for r, reason, _ in parsed.rejects] == [
        (1, "unparseable"),
        (3, "not_an_object"),
    ]
    ((table, index),) = parsed.pieces
    assert table.column("event_id").to_pylist() == ["a", "c"] and index.tolist() == [0, 2]


def test_blank_lines_are_not_records_but_line_numbers_count_them():
    _, _, numbers, total, _ = line_bounds(b'{"a":1}\n\n   \n{"a":2}')
    assert numbers.tolist() == [0, 3] and total == 4
    assert parse_lines(b'\n\n{"a":1}\n  \n').records == 1


def test_a_record_spread_over_lines_is_two_bad_lines():
    parsed = parse_lines(b'{"a":\n1}\n')
    assert parsed.records == 2
    assert [reason for _, reason, _ in parsed.rejects] == ["unparseable", "unparseable"]


def test_invalid_utf8_is_unparseable_not_an_error():
    parsed = parse_lines(b'{"a":"\xff"}\n{"a":"ok"}\n')
    assert [(r, reason) for r, reason, _ in parsed.rejects] == [(0, "unparseable")]


def test_types_that_clash_between_records_are_parsed_separately():
    parsed = parse_lines(b'{"ts":1793491200}\n{"ts":"2026-11-01T00:00:00Z"}\n{"ts":null}\n')
    assert parsed.rejects == []
    assert sorted(t.num_rows for t, _ in parsed.pieces) == [1, 2]


@given(st.lists(objects.map(lambda o: json.dumps(o).encode()), max_size=20))
def test_messages_and_lines_give_the_same_rows(recs):
    as_lines = parse_lines(b"\n".join(recs) + b"\n")
    as_messages = parse_messages(recs)

    def rows(p):
        out = {}
        for t, idx in p.pieces:
            for j, row in enumerate(t.to_pylist()):
                out[j if idx is None else int(idx[j])] = {
                    k: v for k, v in row.items() if v is not None
                }
        return out

    assert as_lines.records == as_messages.records
    assert [r for r, _, _ in as_lines.rejects] == [r for r, _, _ in as_messages.rejects]
    assert set(rows(as_lines)) == set(rows(as_messages))


def test_a_blank_or_multiline_message_is_still_one_record():
    parsed = parse_messages([b'{"a":1}', b"", b'{\n "a": 2\n}', b"[1]"])
    assert parsed.records == 4
    assert [(r, reason) for r, reason, _ in parsed.rejects] == [
        (1, "unparseable"),
        (3, "not_an_object"),
    ]
    assert sum(t.num_rows for t, _ in parsed.pieces) == 2
