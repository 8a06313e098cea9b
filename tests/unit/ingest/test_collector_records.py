"""The collector's record handling: parsing bodies, validating records, spelling messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import assume, event, given
from hypothesis import strategies as st

from clickloop.errors import InvalidInputError
from clickloop.events import Mapping
from clickloop.ingest.collector_body import UnsupportedMediaTypeError, parse_body, parse_query
from clickloop.ingest.collector_records import EventValidator, to_messages

NOW_S = 1_793_491_200  # 2026-11-01T00:00:00Z
ARRIVAL_US = NOW_S * 1_000_000 + 5_000_000


# -- parse_body ---------------------------------------------------------------------------


def test_one_object_an_array_and_ndjson_give_the_same_records():
    a, b = {"event_id": "a"}, {"event_id": "b"}
    assert parse_body(orjson.dumps(a), "application/json").records == [a]
    assert parse_body(orjson.dumps([a, b]), "application/json; charset=utf-8").records == [a, b]
    nd = b'{"event_id": "a"}\r\n\n  \n{"event_id": "b"}\n'
    parsed = parse_body(nd, "application/x-ndjson")
    assert parsed.records == [a, b]
    assert parsed.total == 2 and parsed.lines == {0: 1, 1: 4}


def test_records_that_are_not_objects_are_refused_with_their_index_and_line():
    parsed = parse_body(b'[{"a": 1}, 5, "x", null, [1]]', "application/json")
    assert parsed.total == 5 and parsed.positions == [0]
    assert [(r.index, r.reason) for r in parsed.rejects] == [
        (1, "not_an_object"),
        (2, "not_an_object"),
        (3, "not_an_object"),
        (4, "not_an_object"),
    ]
    assert "a JSON number" in parsed.rejects[0].detail
    nd = parse_body(b'{"a": 1}\n{oops\n\n7\n', "application/x-ndjson")
    assert [(r.index, r.line, r.reason) for r in nd.rejects] == [
        (1, 2, "unparseable"),
        (2, 4, "not_an_object"),
    ]


def test_a_body_that_is_not_json_is_one_unparseable_error():
    for body, ctype in [(b"{bad", "application/json"), (b"", None), (b"  \n", "text/plain")]:
        with pytest.raises(InvalidInputError) as err:
            parse_body(body, ctype)
        assert err.value.http_status == 400
        assert err.value.details["errors"][0]["reason"] == "unparseable"


def test_a_declared_json_body_is_not_sniffed_as_ndjson():
    nd = b'{"a": 1}\n{"a": 2}\n'
    with pytest.raises(InvalidInputError):
        parse_body(nd, "application/json")
    for ctype in (
        None,
        "text/plain;charset=UTF-8",  # navigator.sendBeacon
        "application/octet-stream",
        "application/x-www-form-urlencoded",  # curl -d
    ):
        assert len(parse_body(nd, ctype).records) == 2  # sendBeacon sends text/plain


def test_byte_order_mark_and_json_suffix_types_are_read():
    assert parse_body(b'\xef\xbb\xbf{"a": 1}', "application/vnd.x+json").records == [{"a": 1}]


def test_an_unknown_content_type_is_415():
    with pytest.raises(UnsupportedMediaTypeError) as err:
        parse_body(b"a=1", "multipart/form-data; boundary=x")
    assert err.value.http_status == 415


@given(st.binary(max_size=300), st.sampled_from([None, "application/json", "application/x-ndjson"]))
def test_any_bytes_either_parse_or_raise_a_400(body: bytes, ctype: str | None):
    try:
        parsed = parse_body(body, ctype)
    except InvalidInputError as exc:
        assert exc.http_status == 400
        return
    assert parsed.total == len(parsed.records) + len(parsed.rejects)
    assert sorted(parsed.positions + [r.index for r in parsed.rejects]) == list(range(parsed.total))


def test_pixel_query_last_value_wins_referer_is_the_url_cache_buster_ignored():
    rec = parse_query([("a", "1"), ("a", "2"), ("_", "9")], "https://shop.example/p")
    assert rec == {"a": "2", "url": "https://shop.example/p"}
    assert parse_query([("url", "https://x.example/")], "https://y.example/")["url"] == (
        "https://x.example/"
    )


# -- validation: the collector agrees with the contract's validator --------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
junk = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=4), scalars, max_size=3),
)
times = st.one_of(
    st.integers(NOW_S - 86_400 * 30, NOW_S),
    st.integers((NOW_S - 86_400) * 1000, NOW_S * 1000),
    st.floats(NOW_S - 86_400.0, NOW_S + 7200.0),
    st.datetimes(datetime(2020, 1, 1), datetime(2026, 11, 2)).map(lambda d: d.isoformat() + "Z"),
    st.sampled_from(["yesterday", "", "2026-13-01T00:00:00Z", "1793491200000"]),
)
good = {
    "event_id": st.one_of(st.text(min_size=1, max_size=30), st.integers(0, 10**15)),
    "ts": times,
    "type": st.sampled_from(["page_view", "click", "impression", "x.custom:1", "Bad Type", ""]),
    "user_id": st.one_of(st.text(min_size=1, max_size=10), st.integers(0, 10**6)),
    "session_id": st.text(max_size=10),
    "url": st.sampled_from(["https://a.example/x?y=1", "http://b.example:8080/", "nope", "/rel"]),
    "referrer": st.sampled_from(["https://c.example/", "android-app://com.x/", "junk"]),
    "props": st.one_of(
        st.dictionaries(st.text(max_size=5), junk, max_size=4),
        st.sampled_from(['{"a": 1.0}', "[1]", "", "{bad"]),
    ),
}
valid = st.fixed_dictionaries(
    {
        "event_id": good["event_id"],
        "ts": st.one_of(
            st.integers(NOW_S - 86_400, NOW_S),
            st.datetimes(datetime(2025, 1, 1), datetime(2026, 11, 1)).map(
                lambda d: d.isoformat() + "Z"
            ),
        ),
        "type": st.sampled_from(["page_view", "click", "x.custom:1"]),
        "user_id": good["user_id"],
    },
    optional={
        "session_id": st.text(min_size=1, max_size=10),
        "url": st.just("https://a.example/x?y=1"),
        "props": st.dictionaries(st.text(max_size=5), scalars, max_size=4),
        "price": scalars,
    },
)
wild = st.builds(
    lambda fields, extra: {**extra, **fields},
    st.fixed_dictionaries({}, optional={k: st.one_of(v, v, junk) for k, v in good.items()}),
    st.dictionaries(st.sampled_from(["price", "item", "n", "received_at"]), junk, max_size=3),
)
mutated = st.builds(
    lambda rec, changes: {**rec, **changes},
    valid,
    st.dictionaries(st.sampled_from([*good, "received_at", "n"]), junk, max_size=2),
)
records = st.one_of(valid, mutated, wild)


def reference(mapping: Mapping, record: dict[str, Any]) -> tuple[str, Any]:
    """The contract's own validator on a one-record table (types inferred by pyarrow)."""
    rec = {k: v for k, v in record.items() if k != "received_at"}
    try:
        table = pa.Table.from_pylist([rec]) if rec else pa.table({"_": [None]}).drop(["_"])
    except (pa.ArrowException, OverflowError):
        assume(False)  # pyarrow itself cannot type this record
    arrival = datetime.fromtimestamp(ARRIVAL_US / 1e6, UTC)
    out = mapping.validate_table(table, received_at=arrival)
    if out.reasons:
        return out.reasons[0], out.details[0]
    return "ok", canonical(out.events.to_pylist()[0])


def canonical(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["props"] = sorted(row["props"]) or None if row["props"] is not None else None
    return row


@given(records)
def test_each_record_is_judged_as_the_contract_validator_judges_it(record):
    mapping = Mapping()
    expected = reference(mapping, record)
    out = EventValidator(mapping).validate([record], [ARRIVAL_US])
    event("accepted" if not out.rejects else "rejected")
    if out.rejects:
        _, reason, detail = out.rejects[0]
        assert reason == expected[0]
        if "=" in detail.split(": ", 1)[0]:
            # A quoted value may be spelt differently: pyarrow coerces [0.0, False] to
            # [0.0, 0.0] and the mapping quotes a bad props value as JSON text; the
            # collector quotes what the client sent. The field and the explanation agree.
            name, _, rest = detail.partition("=")
            assert name == expected[1].partition("=")[0]
            assert rest.split(": ", 1)[1] == expected[1].split(": ", 1)[1]
        else:
            assert detail == expected[1]
    else:
        assert expected[0] == "ok"
        assert canonical(out.events.to_pylist()[0]) == expected[1]


@given(st.lists(records, min_size=2, max_size=12))
def test_a_records_outcome_does_not_depend_on_its_batch_mates(batch):
    v = EventValidator(Mapping())
    together = v.validate(batch, [ARRIVAL_US] * len(batch))
    rows = together.events.to_pylist()
    got: dict[int, Any] = {int(p): canonical(rows[i]) for i, p in enumerate(together.accepted)}
    got.update({p: (reason, detail) for p, reason, detail in together.rejects})
    assert sorted(got) == list(range(len(batch)))
    for i, record in enumerate(batch):
        alone = v.validate([record], [ARRIVAL_US])
        want = alone.rejects[0][1:] if alone.rejects else canonical(alone.events.to_pylist()[0])
        assert got[i] == want, f"record {i}: {record!r}"
    assert list(together.accepted) == sorted(together.accepted)  # input order kept


def test_values_of_a_type_a_field_never_takes_are_rejected_quoting_them():
    v = EventValidator(Mapping())
    base = {"event_id": "e", "ts": NOW_S, "type": "click", "user_id": "u"}
    cases = [
        ({"user_id": ["u"]}, "bad_user_id", "user_id=['u']"),
        ({"ts": True}, "bad_ts", "ts=True"),
        ({"type": {"a": 1}}, "bad_type", "type={'a': 1}"),
        ({"url": 5}, "bad_url", "url=5"),
        ({"props": [1, 2]}, "bad_props", "props=[1, 2]"),
        ({"session_id": 1.5}, "bad_session_id", "session_id=1.5"),
        ({"event_id": None, "type": 7}, "missing_event_id", "event_id is missing"),
    ]
    out = v.validate([{**base, **c} for c, _, _ in cases], [ARRIVAL_US] * len(cases))
    assert out.events.num_rows == 0
    for (pos, reason, detail), (_, want_reason, quoted) in zip(out.rejects, cases, strict=True):
        assert reason == want_reason, (pos, detail)
        assert detail.startswith(quoted), detail
        assert "\ue000" not in detail


def test_identifiers_and_times_of_any_json_kind_and_huge_integers():
    v = EventValidator(Mapping())
    recs = [
        {"event_id": 2**64 - 1, "ts": NOW_S * 1000, "type": "click", "user_id": 7},
        {"event_id": 12.0, "ts": float(NOW_S), "type": "click", "user_id": "u"},
        {"event_id": "x", "ts": 2**64 - 1, "type": "click", "user_id": "u"},
    ]
    out = v.validate(recs, [ARRIVAL_US] * 3)
    rows = out.events.to_pylist()
    assert [r["event_id"] for r in rows] == ["18446744073709551615", "12"]
    assert rows[0]["user_id"] == "7"
    assert rows[0]["ts"] == rows[1]["ts"] == datetime.fromtimestamp(NOW_S, UTC)
    assert out.rejects[0][:2] == (2, "ts_in_future")


def test_received_at_is_always_the_arrival_time():
    v = EventValidator(Mapping())
    rec = {"event_id": "e", "ts": NOW_S, "type": "click", "user_id": "u", "received_at": 0}
    row = v.validate([rec], [ARRIVAL_US]).events.to_pylist()[0]
    assert row["received_at"] == datetime.fromtimestamp(ARRIVAL_US / 1e6, UTC)
    assert row["props"] is None  # the client's received_at is not a property either


def test_props_keep_the_contracts_spelling():
    v = EventValidator(Mapping())
    rec = {
        "event_id": "e",
        "ts": NOW_S,
        "type": "click",
        "user_id": "u",
        "props": {"price": 100.0, "ok": True, "n": 3, "tags": ["a", 1], "none": None},
        "ratio": 0.25,
        "when": "today",
    }
    props = dict(v.validate([rec], [ARRIVAL_US]).events.to_pylist()[0]["props"])
    assert props == {
        "price": "100",  # as Arrow spells a double, like a batch import of the same JSON
        "ok": "true",
        "n": "3",
        "tags": '["a",1]',
        "ratio": "0.25",
        "when": "today",
    }


def test_the_sources_mapping_applies():
    mapping = Mapping.model_validate(
        {
            "columns": {
                "event_id": "id",
                "ts": {"from": "time", "format": "epoch_ms"},
                "type": {"const": "page_view"},
                "user_id": "uid",
                "received_at": "sent",
            },
            "props": ["plan"],
        }
    )
    v = EventValidator(mapping)
    recs = [
        {"id": 1, "time": NOW_S * 1000, "uid": "u", "plan": "pro", "other": 1, "sent": 5},
        {"id": 2, "time": "x", "uid": "u"},
        {"time": NOW_S * 1000, "uid": "u"},
    ]
    out = v.validate(recs, [ARRIVAL_US] * 3)
    row = out.events.to_pylist()[0]
    assert (row["event_id"], row["type"], dict(row["props"])) == ("1", "page_view", {"plan": "pro"})
    assert [r[1] for r in out.rejects] == ["bad_ts", "missing_event_id"]
    none = EventValidator(Mapping.model_validate({"props": "none"}))
    rec = {"event_id": "e", "ts": NOW_S, "type": "click", "user_id": "u", "x": 1}
    assert none.validate([rec], [ARRIVAL_US]).events.column("props").to_pylist() == [None]


def test_messages_are_canonical_json_keyed_by_user():
    v = EventValidator(Mapping())
    rec = {"event_id": 5, "ts": "2026-11-01T00:00:00.5Z", "type": "click", "user_id": "ü", "a": 1}
    ((key, value),) = to_messages(v.validate([rec], [ARRIVAL_US]).events)
    assert key == "ü".encode()
    assert json.loads(value) == {
        "event_id": "5",
        "ts": "2026-11-01T00:00:00.500000Z",
        "received_at": "2026-11-01T00:00:05.000000Z",
        "type": "click",
        "user_id": "ü",
        "session_id": None,
        "url": None,
        "referrer": None,
        "props": {"a": "1"},
    }


tricky = st.text(alphabet=st.sampled_from('ab"\\\n\t\x00\x1fé€𝕏\u2028 /'), min_size=1, max_size=8)


@given(
    st.lists(
        st.fixed_dictionaries(
            {"event_id": tricky, "user_id": tricky, "ts": st.integers(NOW_S - 10**6, NOW_S)},
            optional={
                "type": st.sampled_from(["click", "page_view"]),
                "session_id": tricky,
                "url": st.sampled_from(['https://a.example/"q"\\x', "https://b.example/é"]),
                "props": st.dictionaries(tricky, st.one_of(tricky, st.integers())),
                "x_extra": tricky,  # a key props (from `tricky`) never has
            },
        ),
        min_size=1,
        max_size=15,
    )
)
def test_messages_are_byte_for_byte_what_orjson_spells(batch):
    for rec in batch:
        rec.setdefault("type", "click")
    out = EventValidator(Mapping()).validate(batch, [ARRIVAL_US] * len(batch))
    want = []
    for row in out.events.to_pylist():
        row["ts"] = row["ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        row["received_at"] = row["received_at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        row["props"] = None if row["props"] is None else dict(row["props"])
        want.append((row["user_id"].encode(), orjson.dumps(row)))
    assert to_messages(out.events) == want  # a few rows: orjson
    k = 64 // max(1, len(want)) + 1  # many rows: Arrow string kernels
    assert to_messages(pa.concat_tables([out.events] * k)) == want * k


@given(st.lists(records, min_size=1, max_size=20))
def test_the_stream_ingester_reads_back_exactly_the_events_the_collector_accepted(batch):
    from clickloop.ingest.process import process_messages

    out = EventValidator(Mapping()).validate(batch, [ARRIVAL_US] * len(batch))
    messages = [value for _, value in to_messages(out.events)]
    assume(messages)
    back = process_messages(messages, Mapping(), source="web", origins=["bus"] * len(messages))
    assert back.rejects.num_rows == 0
    assert [canonical(r) for r in back.events.to_pylist()] == [
        canonical(r) for r in out.events.to_pylist()
    ]
