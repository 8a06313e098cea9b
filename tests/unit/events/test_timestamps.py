from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickloop.errors import UsageError
from clickloop.events.timestamps import parse_timestamps

T = datetime(2026, 11, 1, 12, 30, 45, 123000, tzinfo=UTC)
instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


def one(value, fmt="auto", tz="UTC"):
    p = parse_timestamps(pa.array([value]), fmt, tz)
    return p.values[0].as_py(), bool(p.missing[0]), bool(p.bad[0])


@pytest.mark.parametrize(
    ("value", "fmt"),
    [
        ("2026-11-01T12:30:45.123Z", "auto"),
        ("2026-11-01T14:30:45.123+02:00", "iso8601"),
        ("2026-11-01T07:30:45.123-0500", "auto"),
        ("2026-11-01 12:30:45.123", "iso8601"),
        (1_793_536_245.123, "auto"),
        (1_793_536_245_123, "auto"),
        (1_793_536_245_123_000, "auto"),
        (1_793_536_245_123_000_000, "auto"),
        ("1793536245123", "auto"),
        (1_793_536_245_123, "epoch_ms"),
        ("1793536245.123", "epoch_s"),
        (1_793_536_245_123_000, "epoch_us"),
        ("01/11/2026 12:30:45.123", "%d/%m/%Y %H:%M:%S.%g"),
    ],
)
def test_every_supported_spelling_gives_the_same_instant(value, fmt):
    assert one(value, fmt) == (T, False, False)


def test_naive_times_are_read_in_the_source_time_zone():
    paris = timezone(timedelta(hours=1))  # 1 November: CET
    got, _, _ = one("2026-11-01 13:30:45.123", "iso8601", "Europe/Paris")
    assert got == T.astimezone(paris)
    got, _, _ = one("01/11/2026 13:30", "%d/%m/%Y %H:%M", "Europe/Paris")
    assert got == datetime(2026, 11, 1, 12, 30, tzinfo=UTC)


def test_temporal_arrow_types():
    naive = pa.array([datetime(2026, 11, 1, 12, 30, 45, 123000)], pa.timestamp("ms"))
    assert parse_timestamps(naive).values[0].as_py() == T
    aware = pa.array([T], pa.timestamp("ns", tz="America/New_York"))
    assert parse_timestamps(aware).values[0].as_py() == T


@pytest.mark.parametrize(
    "value",
    [
        "2026-13-45T25:61:00Z",
        "not-a-date",
        "31/31/2026 99:99",
        "infinity",
        "epoch",
        "now",
        "12:30",
        True,
    ],
)
def test_garbage_is_bad_not_missing(value):
    got, missing, bad = one(value)
    assert got is None and bad and not missing


@pytest.mark.parametrize("value", [None, "", "   "])
def test_blank_is_missing(value):
    got, missing, bad = one(value)
    assert got is None and missing and not bad


def test_wrong_format_for_the_column_is_bad():
    assert one("2026-11-01T00:00:00Z", "epoch_ms")[2]
    assert one(1_793_536_245, "iso8601")[2]


def test_unknown_format_and_zone_are_usage_errors():
    with pytest.raises(UsageError, match="unknown timestamp format"):
        parse_timestamps(pa.array(["x"]), "rfc9999")
    with pytest.raises(UsageError, match="unknown time zone"):
        parse_timestamps(pa.array(["2026-01-01"]), "iso8601", "Mars/Olympus'--")


@given(instants, st.sampled_from(["Z", "+00:00", "+05:30", "-08:00"]), st.sampled_from(["T", " "]))
def test_iso_roundtrip(dt, zone, sep):
    offset = {"Z": 0, "+00:00": 0, "+05:30": 330, "-08:00": -480}[zone]
    local = dt.astimezone(timezone(timedelta(minutes=offset)))
    text = local.strftime(f"%Y-%m-%d{sep}%H:%M:%S.%f")[:-3] + zone
    assert one(text, "iso8601") == (dt, False, False)


@given(instants, st.sampled_from(["epoch_s", "epoch_ms", "epoch_us", "auto"]))
def test_epoch_roundtrip(dt, fmt):
    ms = int(dt.timestamp() * 1000 + (0.5 if dt.timestamp() >= 0 else -0.5))
    value = {"epoch_s": ms / 1000, "epoch_ms": ms, "epoch_us": ms * 1000, "auto": ms}[fmt]
    got, _, bad = one(value, fmt)
    assert not bad
    assert abs((got - dt).total_seconds()) < 0.001


@given(
    st.lists(
        st.one_of(st.none(), st.text(max_size=40), st.integers(), st.floats()),
        min_size=1,
        max_size=30,
    )
)
def test_any_column_sorts_each_value_into_exactly_one_state(values):
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        arr = pa.array([None if v is None else str(v) for v in values])
    p = parse_timestamps(arr)
    parsed = ~p.values.is_null().to_numpy(zero_copy_only=False)
    assert len(p.values) == len(values)
    assert ((parsed.astype(int) + p.missing + p.bad) == 1).all()
