"""Vectorised timestamp parsing into UTC microseconds.

Supported formats (``format=`` in a source's column mapping):

``auto``
    numbers are epoch seconds, milliseconds, microseconds or nanoseconds chosen
    by magnitude; digit-only strings likewise; other strings are ISO-8601.
``iso8601``
    ``2026-11-01T12:00:00Z``, ``…+02:00``, ``…+0200``, fractional seconds,
    ``2026-11-01 12:00:00`` and ``2026-11-01``; values without a zone are read
    in the source's ``timezone``.
``epoch_s`` / ``epoch_ms`` / ``epoch_us`` / ``epoch_ns``
    numbers (or numeric strings) in that unit; fractions allowed.
any strftime pattern (contains ``%``)
    e.g. ``%d/%m/%Y %H:%M:%S``; without ``%z`` the source's ``timezone`` applies.

Every value ends up in exactly one of three states — parsed, *missing* (null or
blank) or *bad* (present but not a time in that format) — so the validator can
give each record the right reason code.

>>> import pyarrow as pa
>>> p = parse_timestamps(pa.array(["2026-11-01T00:00:00Z", "nope", None]))
>>> p.values.to_pylist()[0].isoformat(), p.bad.tolist(), p.missing.tolist()
('2026-11-01T00:00:00+00:00', [False, True, False], [False, False, True])
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clickloop.errors import UsageError
from clickloop.events.schema import UTC_US

EPOCH_UNITS: Final = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1, "epoch_ns": 0.001}
NAMED_FORMATS: Final = ("auto", "iso8601", *EPOCH_UNITS)

# Any instant we accept must fit comfortably in int64 microseconds.
_MIN_US: Final = -(2**62)
_MAX_US: Final = 2**62
_ISO_GUARD: Final = r"^\d{4}-\d{2}-\d{2}"
_TZ_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-/]{0,63}$")
_NUMERIC: Final = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"

_local = threading.local()


def _duck() -> Any:
    import duckdb

    con = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect(config={"threads": 1})
        _local.con = con
    return con


@dataclass(frozen=True)
class ParsedTimes:
    """Parsed instants (UTC µs, null where missing or bad) and the two failure masks."""

    values: pa.TimestampArray
    missing: np.ndarray
    bad: np.ndarray


def check_format(fmt: str) -> str:
    """Return ``fmt`` if it is a known format name or a strftime pattern, else raise."""
    if fmt in NAMED_FORMATS or "%" in fmt:
        return fmt
    raise UsageError(
        f"unknown timestamp format {fmt!r}",
        hint=f"use one of {', '.join(NAMED_FORMATS)} "
        "or a strftime pattern such as '%d/%m/%Y %H:%M'",
    )


def parse_timestamps(
    values: pa.Array | pa.ChunkedArray, fmt: str = "auto", timezone: str = "UTC"
) -> ParsedTimes:
    """Parse a column of times of any Arrow type into UTC microsecond timestamps."""
    check_format(fmt)
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    t = arr.type
    if pa.types.is_null(t):
        n = len(arr)
        return ParsedTimes(pa.nulls(n, UTC_US), np.ones(n, bool), np.zeros(n, bool))
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return _from_temporal(arr, timezone)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        missing = np.asarray(arr.is_null().to_numpy(zero_copy_only=False))
        if fmt not in EPOCH_UNITS and fmt != "auto":
            return _all_bad(arr, missing)
        return _from_epoch(arr, fmt, missing)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _from_strings(arr, fmt, timezone)
    # booleans, lists, structs …: never a time.
    missing = np.asarray(arr.is_null().to_numpy(zero_copy_only=False))
    return _all_bad(arr, missing)


def _all_bad(arr: pa.Array, missing: np.ndarray) -> ParsedTimes:
    return ParsedTimes(pa.nulls(len(arr), UTC_US), missing, ~missing)


def _from_temporal(arr: pa.Array, timezone: str) -> ParsedTimes:
    missing = np.asarray(arr.is_null().to_numpy(zero_copy_only=False))
    if pa.types.is_date(arr.type):
        arr = arr.cast(pa.timestamp("us"))
    if arr.type.tz is None and timezone != "UTC":
        arr = pc.assume_timezone(arr, timezone, ambiguous="earliest", nonexistent="earliest")
    out = arr.cast(pa.timestamp(arr.type.unit, tz="UTC")).cast(UTC_US, safe=False)
    return ParsedTimes(out, missing, np.zeros(len(arr), bool))


def _from_epoch(nums: pa.Array, fmt: str, missing: np.ndarray) -> ParsedTimes:
    """Epoch numbers → µs. Integers are converted exactly; floats keep µs precision."""
    if pa.types.is_integer(nums.type):
        x = np.asarray(
            nums.fill_null(0).cast(pa.int64(), safe=False).to_numpy(zero_copy_only=False)
        )
        mag = np.abs(x.astype(np.float64))
        if fmt == "auto":
            unit = np.select([mag >= 1e17, mag >= 1e14, mag >= 1e11], [3, 2, 1], default=0)
        else:
            unit = np.full(len(x), {"epoch_ns": 3, "epoch_us": 2, "epoch_ms": 1, "epoch_s": 0}[fmt])
        limit = np.array([_MAX_US // 1_000_000, _MAX_US // 1_000, _MAX_US, 2**63 - 1])[unit]
        ok = (mag < limit) & ~missing
        safe = np.where(ok, x, 0)
        us = np.select(
            [unit == 0, unit == 1, unit == 2],
            [safe * 1_000_000, safe * 1_000, safe],
            default=np.floor_divide(safe, 1000),
        )
        out = pa.array(us, type=pa.int64(), mask=~ok).cast(UTC_US)
        return ParsedTimes(out, missing, ~ok & ~missing)
    x = (
        nums.cast(pa.float64(), safe=False)
        .to_numpy(zero_copy_only=False)
        .astype(np.float64, copy=False)
    )
    with np.errstate(invalid="ignore", over="ignore"):
        if fmt == "auto":
            mag = np.abs(x)
            scale = np.select(
                [mag >= 1e17, mag >= 1e14, mag >= 1e11], [0.001, 1.0, 1_000.0], default=1_000_000.0
            )
        else:
            scale = np.full(len(x), EPOCH_UNITS[fmt], dtype=np.float64)
        us = x * scale
        ok = np.isfinite(us) & (us > _MIN_US) & (us < _MAX_US) & ~missing
    us_int = np.where(ok, np.round(np.where(ok, us, 0)), 0).astype(np.int64)
    out = pa.array(us_int, type=pa.int64(), mask=~ok).cast(UTC_US)
    return ParsedTimes(out, missing, ~ok & ~missing)


def _from_strings(arr: pa.Array, fmt: str, timezone: str) -> ParsedTimes:
    trimmed = pc.utf8_trim_whitespace(arr)
    missing = np.asarray(
        pc.or_kleene(pc.is_null(trimmed), pc.equal(trimmed, ""))
        .fill_null(True)
        .to_numpy(zero_copy_only=False)
    )
    strict = None
    if fmt in EPOCH_UNITS or fmt == "auto":
        if fmt == "auto":
            # a strict ISO value is never a number: only the other values need the number
            # test (the usual ISO column has none, or a few bad ones)
            strict = _np(pc.match_substring_regex(trimmed, _STRICT_ISO))
            rest = np.flatnonzero(~strict & ~missing)
            is_num = np.zeros(len(arr), bool)
            if len(rest):
                some = trimmed.take(pa.array(rest, pa.int64()))
                is_num[rest] = _np(pc.match_substring_regex(some, _NUMERIC))
        else:
            is_num = _np(pc.match_substring_regex(trimmed, _NUMERIC))
        numeric = pa.array(is_num)
        if fmt in EPOCH_UNITS or bool((is_num | missing).all()):
            nums = pc.if_else(numeric, trimmed, None)
            parsed = _from_epoch(nums.cast(pa.float64()), fmt, missing)
            return ParsedTimes(parsed.values, missing, ~missing & (parsed.bad | ~is_num))
        if is_num.any():
            # A mixed column: numbers by magnitude, the rest as ISO-8601.
            nums = pc.if_else(numeric, trimmed, None).cast(pa.float64())
            by_epoch = _from_epoch(nums, "auto", ~is_num)
            by_iso = _iso(pc.if_else(numeric, None, trimmed), timezone, strict)
            merged = pc.if_else(numeric, by_epoch.values, by_iso)
            return ParsedTimes(merged, missing, ~missing & _np(pc.is_null(merged)))
    out = (
        _iso(trimmed, timezone, strict)
        if fmt in ("auto", "iso8601")
        else _strptime(trimmed, fmt, timezone)
    )
    return ParsedTimes(out, missing, ~missing & _np(pc.is_null(out)))


def _np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(mask.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _run(sql: str, strings: pa.Array, timezone: str, *params: object) -> pa.TimestampArray:
    if not _TZ_NAME.match(timezone):
        raise UsageError(
            f"unknown time zone {timezone!r}", hint="use an IANA name such as 'Europe/Paris'"
        )
    con = _duck()
    if getattr(_local, "tz", None) != timezone:
        con.execute(f"SET TimeZone = '{timezone}'")
        _local.tz = timezone
    con.register("_ts_input", pa.table({"s": strings}))
    try:
        out = con.sql(sql, params=list(params) or None).to_arrow_table().column(0)
    finally:
        con.unregister("_ts_input")
    result = out.combine_chunks() if out.num_chunks != 1 else out.chunk(0)
    return result.cast(UTC_US)


# Zoned ISO-8601 with at most microseconds and fields in range: Arrow's own cast parses it
# exactly like DuckDB does, without DuckDB's fixed cost per call (it dominates small
# batches, e.g. the collector) or its per-row cost (it dominates big ones).
_STRICT_ISO: Final = (
    r"^[12]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):?[0-5]\d)$"
)
_DUCK_ISO: Final = (
    "SELECT CASE WHEN regexp_matches(s, ?) AND isfinite(t)"
    " AND t BETWEEN TIMESTAMPTZ '0001-01-02 00:00:00+00'"
    " AND TIMESTAMPTZ '9999-12-30 00:00:00+00'"
    " THEN t END FROM (SELECT s, try_cast(s AS TIMESTAMPTZ) AS t FROM _ts_input)"
)


def _iso(strings: pa.Array, timezone: str, strict: np.ndarray | None = None) -> pa.TimestampArray:
    """ISO-8601 strings → instants (``strict``: their :data:`_STRICT_ISO` matches, if known;
    a null string never matches)."""
    if strict is None:
        strict = _np(pc.match_substring_regex(strings, _STRICT_ISO))
    else:
        strict = strict & ~_np(pc.is_null(strings))
    other = np.flatnonzero(~strict & ~_np(pc.is_null(strings)))
    if len(other) == 0:
        try:
            return pc.cast(strings, UTC_US)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # e.g. 30 February: let DuckDB sort out which values are bad
    elif len(other) < len(strings):
        # the usual mix: a few odd values among well-formed ones; only the odd ones pay
        # for DuckDB, and each value's outcome is the same as if it came alone
        try:
            plain = pc.cast(pc.if_else(pa.array(strict), strings, None), UTC_US)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            plain = None
        if plain is not None:
            picked = pa.array(other, pa.int64())
            odd = _run(_DUCK_ISO, strings.take(picked), timezone, _ISO_GUARD)
            values = plain.cast(pa.int64()).fill_null(0).to_numpy().astype(np.int64)
            valid = strict.copy()
            values[other] = np.asarray(odd.cast(pa.int64()).fill_null(0).to_numpy(), np.int64)
            valid[other] = ~_np(odd.is_null())
            return pa.array(values, pa.int64(), mask=~valid).cast(UTC_US)
    return _run(_DUCK_ISO, strings, timezone, _ISO_GUARD)


def _strptime(strings: pa.Array, fmt: str, timezone: str) -> pa.TimestampArray:
    sql = "SELECT CAST(try_strptime(s, ?) AS TIMESTAMPTZ) FROM _ts_input"
    return _run(sql, strings, timezone, fmt)
