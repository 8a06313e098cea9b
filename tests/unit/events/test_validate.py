from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickloop.events import EVENT_SCHEMA, Reason, validate

NOW = datetime(2026, 11, 2, tzinfo=UTC)
GOOD = {
    "event_id": "e1",
    "ts": "2026-11-01T10:00:00Z",
    "type": "page_view",
    "user_id": "u1",
    "session_id": "s1",
    "url": "https://shop.example.com/items/1/123?utm_source=x",
    "referrer": "https://www.google.com/",
    "props": '{"price": 12.5, "ok": true}',
}


def check(**changes):
    row = {**GOOD, **changes}
    row = {k: v for k, v in row.items() if v is not ...}
    return validate(pa.Table.from_pylist([row]), received_at=NOW)


def test_a_good_record_becomes_a_canonical_event():
    v = check()
    assert v.events.schema == EVENT_SCHEMA
    row = v.events.to_pylist()[0]
    assert row["ts"] == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert row["received_at"] == NOW
    assert row["props"] == [("price", "12.5"), ("ok", "true")]
    assert v.reasons == [] and len(v.rejected) == 0


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"event_id": ...}, Reason.MISSING_EVENT_ID),
        ({"event_id": ""}, Reason.MISSING_EVENT_ID),
        ({"event_id": "x" * 129}, Reason.BAD_EVENT_ID),
        ({"user_id": None}, Reason.MISSING_USER_ID),
        ({"ts": ...}, Reason.MISSING_TS),
        ({"ts": "2026-13-45T25:61:00Z"}, Reason.BAD_TS),
        ({"ts": "1969-07-20T20:17:00Z"}, Reason.TS_OUT_OF_RANGE),
        ({"ts": "2026-11-03T00:00:00Z"}, Reason.TS_IN_FUTURE),
        ({"type": ""}, Reason.MISSING_TYPE),
        ({"type": "Page View"}, Reason.BAD_TYPE),
        ({"url": "htp:/shop.example.com/x"}, Reason.BAD_URL),
        ({"url": "shop.example.com/items/1"}, Reason.BAD_URL),
        ({"url": "http://"}, Reason.BAD_URL),
        ({"url": "https://bad host/x"}, Reason.BAD_URL),
        ({"referrer": "not a url"}, Reason.BAD_REFERRER),
        ({"props": "[1, 2]"}, Reason.BAD_PROPS),
        ({"received_at": "yesterday"}, Reason.BAD_RECEIVED_AT),
    ],
)
def test_each_defect_has_its_reason_code(changes, reason):
    v = check(**changes)
    assert v.events.num_rows == 0
    assert v.reasons == [reason.value]
    assert v.details[0]


def test_first_reason_wins_and_the_others_are_listed():
    v = check(event_id=None, url="nope")
    assert v.reasons == ["missing_event_id"]
    assert "also: bad_url" in v.details[0]


def test_detail_quotes_the_offending_value():
    v = check(ts="31/31/2026")
    assert "ts='31/31/2026'" in v.details[0]


def test_optional_fields_may_be_absent_and_ids_may_be_integers():
    v = validate(
        pa.table(
            {
                "event_id": [1, 2],
                "ts": [1_762_000_000_000] * 2,
                "type": ["click"] * 2,
                "user_id": [42, 43],
            }
        ),
        received_at=NOW,
    )
    assert v.events.column("event_id").to_pylist() == ["1", "2"]
    assert v.events.column("user_id").to_pylist() == ["42", "43"]
    assert v.events.column("url").null_count == 2


def test_max_future_is_configurable():
    ok = validate(
        pa.Table.from_pylist([{**GOOD, "ts": "2026-11-02T05:00:00Z"}]),
        received_at=NOW,
        max_future=timedelta(hours=6),
    )
    assert ok.events.num_rows == 1


def test_record_received_at_is_kept_and_bounds_the_future():
    v = validate(
        pa.Table.from_pylist([{**GOOD, "received_at": "2026-11-01T08:59:59Z"}]), received_at=NOW
    )
    assert v.reasons == ["ts_in_future"]


def test_accepted_positions_complement_rejected():
    rows = [GOOD, {**GOOD, "user_id": None}, GOOD, {**GOOD, "url": "x"}]
    v = validate(pa.Table.from_pylist(rows), received_at=NOW)
    assert v.rejected.tolist() == [1, 3]
    assert v.accepted.tolist() == [0, 2]
    assert v.counts == {"missing_user_id": 1, "bad_url": 1}


scalars = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.integers(-(10**15), 10**15),
    st.sampled_from(
        ["2026-11-01T00:00:00Z", "https://a.b/c", "page_view", '{"a": 1}', "", "1762000000000"]
    ),
)
records = st.fixed_dictionaries(
    {},
    optional={
        k: scalars
        for k in ("event_id", "ts", "type", "user_id", "session_id", "url", "referrer", "props")
    },
)


@given(st.lists(records, min_size=1, max_size=25))
def test_never_crashes_and_accounts_for_every_record(rows):
    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        table = pa.Table.from_pylist(
            [{k: None if v is None else str(v) for k, v in r.items()} for r in rows]
        )
    if table.num_columns == 0:
        table = pa.table({"event_id": pa.nulls(len(rows))})
    v = validate(table, received_at=NOW)
    assert v.events.num_rows + len(v.rejected) == len(rows)
    assert len(v.reasons) == len(v.rejected) == len(v.details)
    assert set(v.reasons) <= {r.value for r in Reason}
    assert v.events.schema == EVENT_SCHEMA
    for name in ("event_id", "ts", "received_at", "type", "user_id"):
        assert v.events.column(name).null_count == 0


# Values that exercise the shortcuts (blank detection by first byte, regexes run once per
# distinct value, well-formed times cast by Arrow and only odd ones given to DuckDB).
texts = st.sampled_from(
    [
        "",
        " ",
        "\t",
        "\u3000",
        "\u00a0x",
        " u1",
        "e1",
        "e2",
        "x" * 129,
        "é" * 100,
        "é" * 129,
        "page_view",
        "Page_View",
        "https://a.example/p",
        "ftp://a.example/",
        "htp:/a.example",
        "https://a.example/" + "p" * 8200,
        "2026-11-01T10:00:00Z",
        "2026-11-01T10:00:00.5+02:00",
        "2026-11-01 10:00:00",
        "2026-02-30T10:00:00Z",
        "2026-13-45T25:61:00Z",
        "not-a-date",
        "2026-11-01T10:00:00+0530",
        "2026-11-01T10:00Z",
        "1793536245123",
        "2026-11-01",
    ]
)
text_records = st.fixed_dictionaries(
    {k: texts for k in ("event_id", "ts", "type", "user_id")},
    optional={k: st.none() | texts for k in ("session_id", "url", "referrer", "received_at")},
)


def _outcomes(rows):
    v = validate(pa.Table.from_pylist(rows, schema=_TEXT_SCHEMA), received_at=NOW)
    events = iter(v.events.to_pylist())
    reasons = dict(zip(v.rejected.tolist(), v.reasons, strict=True))
    return [reasons.get(i) or next(events) for i in range(len(rows))]


_TEXT_FIELDS = ("event_id", "ts", "type", "user_id", "session_id", "url", "referrer")
_TEXT_SCHEMA = pa.schema([(k, pa.string()) for k in (*_TEXT_FIELDS, "received_at")])


@given(st.lists(text_records, min_size=2, max_size=40))
def test_a_records_outcome_does_not_depend_on_its_neighbours(rows):
    together = _outcomes(rows)
    alone = [_outcomes([r])[0] for r in rows]
    assert together == alone
