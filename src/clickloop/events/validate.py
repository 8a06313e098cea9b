"""The vectorised event validator.

:func:`validate` takes a table whose columns carry canonical names but any
types (strings from CSV, numbers from JSON, structs for props, …), coerces them
to the canonical schema and sorts every row into exactly one of two piles:
valid events, or rejects with a :class:`~clickloop.events.schema.Reason` code
and a human-readable detail. Nothing is dropped silently: ``len(valid) +
len(rejects) == len(input)`` always holds.

>>> import pyarrow as pa
>>> from datetime import UTC, datetime
>>> t = pa.table({"event_id": ["a", None], "ts": ["2026-11-01T00:00:00Z"] * 2,
...               "type": ["page_view"] * 2, "user_id": ["u1", "u2"]})
>>> v = validate(t, received_at=datetime(2026, 11, 1, 1, tzinfo=UTC))
>>> v.events.num_rows, v.reasons
(1, ['missing_event_id'])
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clickloop.events.props import normalize_props
from clickloop.events.schema import (
    EVENT_SCHEMA,
    MAX_EVENT_ID,
    MAX_ID,
    MAX_URL,
    REASON_ORDER,
    UTC_US,
    Reason,
)
from clickloop.events.timestamps import parse_timestamps

MIN_TS: Final = datetime(1990, 1, 1, tzinfo=UTC)

_HOST: Final = r"[^\s/?#:@\[\]\\.][^\s/?#:@\[\]\\]*"
_PORT: Final = r"(:[0-9]{1,5})?"
_REST: Final = r"([/?#][^\s]*)?"
HTTP_URL: Final = rf"^(?i:https?)://([^\s/?#@]+@)?({_HOST}|\[[0-9A-Fa-f:.]+\]){_PORT}{_REST}$"
ANY_URL: Final = (
    rf"^[A-Za-z][A-Za-z0-9+.\-]*://([^\s/?#@]+@)?({_HOST}|\[[0-9A-Fa-f:.]+\]){_PORT}{_REST}$"
)
TYPE_REGEX: Final = r"^[a-z][a-z0-9_.:\-]{0,63}$"


@dataclass
class Validated:
    """The outcome of :func:`validate`: canonical events plus one reason per reject."""

    events: pa.Table
    rejected: np.ndarray  # positions (int64) in the input table
    reasons: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        """Rejects per reason code."""
        return Counter(self.reasons)

    @property
    def accepted(self) -> np.ndarray:
        """Positions (int64) in the input table of the rows in :attr:`events`."""
        keep = np.ones(self.events.num_rows + len(self.rejected), bool)
        keep[self.rejected] = False
        return np.nonzero(keep)[0]


def validate(
    table: pa.Table,
    *,
    ts_format: str = "auto",
    timezone: str = "UTC",
    received_at: datetime | None = None,
    received_at_format: str = "auto",
    max_future: timedelta = timedelta(hours=1),
) -> Validated:
    """Coerce ``table`` to the canonical event schema and quarantine what does not fit.

    ``received_at`` is the arrival time given to rows that carry none (defaults
    to now). ``max_future`` bounds how far an event time may lie after its
    arrival time (client clocks drift; beyond that the record is quarantined).
    """
    n = table.num_rows
    now = received_at or datetime.now(UTC)
    failures: dict[Reason, np.ndarray] = {}
    detail_cols: dict[Reason, tuple[str, pa.Array]] = {}

    def col(name: str) -> pa.Array:
        if name in table.column_names:
            c = table.column(name)
            if isinstance(c, pa.ChunkedArray):
                return c.chunk(0) if c.num_chunks == 1 else c.combine_chunks()
            return c
        return pa.nulls(n)

    def flag(reason: Reason, mask: np.ndarray, shown: str | None = None) -> None:
        if mask.any():
            failures[reason] = failures.get(reason, np.zeros(n, bool)) | mask
            if shown is not None:
                detail_cols[reason] = (shown, col(shown))

    # identifiers ---------------------------------------------------------------------
    event_id, missing, bad = _ids(col("event_id"), MAX_EVENT_ID)
    flag(Reason.MISSING_EVENT_ID, missing)
    flag(Reason.BAD_EVENT_ID, bad, "event_id")
    user_id, missing, bad = _ids(col("user_id"), MAX_ID)
    flag(Reason.MISSING_USER_ID, missing)
    flag(Reason.BAD_USER_ID, bad, "user_id")
    session_id, _, bad = _ids(col("session_id"), MAX_ID)
    flag(Reason.BAD_SESSION_ID, bad, "session_id")

    # times ---------------------------------------------------------------------------
    ts = parse_timestamps(col("ts"), ts_format, timezone)
    flag(Reason.MISSING_TS, ts.missing)
    flag(Reason.BAD_TS, ts.bad, "ts")
    rec = parse_timestamps(col("received_at"), received_at_format, timezone)
    flag(Reason.BAD_RECEIVED_AT, rec.bad, "received_at")
    received = pc.fill_null(rec.values, pa.scalar(now, UTC_US))
    ts_us = _us(ts.values)
    flag(Reason.TS_OUT_OF_RANGE, _np(pc.less(ts.values, pa.scalar(MIN_TS, UTC_US))), "ts")
    limit = _us(received) + int(max_future.total_seconds() * 1_000_000)
    flag(Reason.TS_IN_FUTURE, ~np.isnan(ts_us) & (ts_us > limit), "ts")

    # type ----------------------------------------------------------------------------
    etype, missing, bad = _strings(col("type"))
    flag(Reason.MISSING_TYPE, missing)
    bad |= ~missing & ~bad & ~_matches(etype, TYPE_REGEX)
    flag(Reason.BAD_TYPE, bad, "type")

    # urls ----------------------------------------------------------------------------
    url, missing, bad = _strings(col("url"))
    bad |= ~missing & ~bad & ~_url_ok(url, HTTP_URL)
    flag(Reason.BAD_URL, bad, "url")
    referrer, missing, bad = _strings(col("referrer"))
    bad |= ~missing & ~bad & ~_url_ok(referrer, ANY_URL)
    flag(Reason.BAD_REFERRER, bad, "referrer")

    # props ---------------------------------------------------------------------------
    props, bad = normalize_props(col("props"))
    flag(Reason.BAD_PROPS, bad, "props")

    out = pa.table(
        [event_id, ts.values, received, etype, user_id, session_id, url, referrer, props],
        schema=_NULLABLE,
    )
    if not failures:
        return Validated(out.cast(EVENT_SCHEMA), np.zeros(0, np.int64))

    reason_idx = np.full(n, -1, np.int64)
    for i, reason in reversed(list(enumerate(REASON_ORDER))):
        mask = failures.get(reason)
        if mask is not None:
            reason_idx[mask] = i
    rejected = np.nonzero(reason_idx >= 0)[0]
    reasons = [REASON_ORDER[i].value for i in reason_idx[rejected]]
    details = [
        _detail(int(r), REASON_ORDER[int(reason_idx[r])], failures, detail_cols) for r in rejected
    ]
    keep = reason_idx < 0
    events = out.filter(pa.array(keep)).cast(EVENT_SCHEMA)
    return Validated(events, rejected.astype(np.int64), reasons, details)


def _detail(
    row: int,
    reason: Reason,
    failures: dict[Reason, np.ndarray],
    values: dict[Reason, tuple[str, pa.Array]],
) -> str:
    text = _EXPLAIN.get(reason, reason.value.replace("_", " "))
    if reason in values:
        name, column = values[reason]
        text = f"{name}={_short(column[row].as_py())}: {text}"
    others = [
        r.value for r in REASON_ORDER if r is not reason and r in failures and failures[r][row]
    ]
    if others:
        text += f" (also: {', '.join(others)})"
    return text


_NULLABLE: Final = pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA])

_EXPLAIN: Final = {
    Reason.MISSING_EVENT_ID: "event_id is missing or empty",
    Reason.BAD_EVENT_ID: (
        f"event_id must be a string or integer of at most {MAX_EVENT_ID} characters"
    ),
    Reason.MISSING_USER_ID: "user_id is missing or empty",
    Reason.BAD_USER_ID: f"user_id must be a string or integer of at most {MAX_ID} characters",
    Reason.BAD_SESSION_ID: f"session_id must be a string or integer of at most {MAX_ID} characters",
    Reason.MISSING_TS: "ts (event time) is missing",
    Reason.BAD_TS: "not a time in the source's timestamp format",
    Reason.TS_OUT_OF_RANGE: "before 1990-01-01 (an epoch unit mix-up?)",
    Reason.TS_IN_FUTURE: "event time is later than arrival time plus max_future",
    Reason.BAD_RECEIVED_AT: "not a time in the source's timestamp format",
    Reason.MISSING_TYPE: "type is missing or empty",
    Reason.BAD_TYPE: "type must match ^[a-z][a-z0-9_.:-]{0,63}$",
    Reason.BAD_URL: f"not an absolute http(s) URL with a host of at most {MAX_URL} characters",
    Reason.BAD_REFERRER: f"not an absolute URL with a host of at most {MAX_URL} characters",
    Reason.BAD_PROPS: "props must be a JSON object of scalar values",
}


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(mask.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _us(ts: pa.Array) -> np.ndarray:
    """Timestamps as float64 microseconds, NaN for null (so comparisons are False)."""
    ints = ts.cast(pa.int64())
    return np.asarray(ints.to_numpy(zero_copy_only=False), dtype=np.float64)


def _strings(arr: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(string column with blanks as null, missing mask, bad-type mask)."""
    n = len(arr)
    t = arr.type
    if pa.types.is_dictionary(t):
        arr, t = arr.cast(t.value_type), t.value_type
    if pa.types.is_null(t):
        return pa.nulls(n, pa.string()), np.ones(n, bool), np.zeros(n, bool)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        s = arr.cast(pa.string())
        blank = _blank(s)
        missing = _np(pc.is_null(s)) | blank
        if blank.any():
            s = pc.if_else(pa.array(blank), None, s)
        return s, missing, np.zeros(n, bool)
    missing = _np(pc.is_null(arr))
    return pa.nulls(n, pa.string()), missing, ~missing


def _blank(s: pa.StringArray) -> np.ndarray:
    """Non-null values that are empty or only whitespace. A blank value is empty or starts
    with a control, space or non-ASCII byte: only those few are trimmed and compared."""
    n = len(s)
    offsets = np.frombuffer(s.buffers()[1], np.int32)[s.offset : s.offset + n + 1]
    data = s.buffers()[2]
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    first = raw[np.minimum(offsets[:-1], max(len(raw) - 1, 0))] if len(raw) else lengths * 0
    maybe = (lengths == 0) | (first <= 0x20) | (first >= 0x80)
    if s.null_count:
        maybe &= ~_np(pc.is_null(s))
    blank = np.zeros(n, bool)
    picked = np.flatnonzero(maybe)
    if len(picked):
        some = s.take(pa.array(picked, pa.int64()))
        blank[picked] = _np(pc.equal(pc.utf8_trim_whitespace(some), ""))
    return blank


def _ids(arr: pa.Array, max_len: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Identifiers: strings, or integers (and integral floats) spelled as decimal strings."""
    t = arr.type
    if pa.types.is_integer(t):
        s = arr.cast(pa.string())
        missing = _np(pc.is_null(arr))
        return s, missing, np.zeros(len(arr), bool)
    if pa.types.is_floating(t):
        integral = _np(pc.equal(pc.floor(arr), arr)) & _np(pc.less(pc.abs(arr), 2.0**53))
        missing = _np(pc.is_null(arr))
        s = pc.if_else(
            pa.array(integral),
            pc.if_else(pa.array(integral), arr, 0).cast(pa.int64()).cast(pa.string()),
            None,
        )
        return s, missing, ~missing & ~integral
    s, missing, bad = _strings(arr)
    return s, missing, bad | _too_long(s, max_len)


def _too_long(s: pa.Array, limit: int) -> np.ndarray:
    """Values of more than ``limit`` characters (a value of at most ``limit`` bytes never
    is: characters are counted only where the byte length says they might be)."""
    if pa.types.is_null(s.type):
        return np.zeros(len(s), bool)
    long = _np(pc.greater(pc.binary_length(s), limit))
    if long.any():
        long &= _np(pc.greater(pc.utf8_length(s), limit))
    return long


def _matches(s: pa.Array, pattern: str) -> np.ndarray:
    """Whether each value matches ``pattern`` (null: False). Columns like URLs and types
    repeat a lot: the regex runs once per distinct value."""
    if pa.types.is_null(s.type) or s.null_count == len(s):
        return np.zeros(len(s), bool)
    d = pc.dictionary_encode(s)
    if len(d.dictionary) * 2 > len(s):
        return _np(pc.match_substring_regex(s, pattern))
    ok = pc.match_substring_regex(d.dictionary, pattern)
    return _np(ok.take(d.indices))


def _url_ok(s: pa.Array, pattern: str) -> np.ndarray:
    return _matches(s, pattern) & ~_too_long(s, MAX_URL)
