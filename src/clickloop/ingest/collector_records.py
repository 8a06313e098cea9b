"""The collector's records: JSON objects → canonical events (each judged on its own) → messages.

:class:`EventValidator` maps records through the source's
:class:`~clickloop.events.Mapping` and the event contract's vectorised
validator. Records of many requests are validated in one call (the validator
has a fixed cost of a few milliseconds per call, so the collector coalesces
concurrent requests) and every record's outcome depends on that record alone,
never on the others it was batched with. :func:`to_messages` spells the valid
events as the ``events`` topic's messages (see :mod:`clickloop.bus.base`): one
canonical JSON object each, keyed by ``user_id``.

>>> from clickloop.events import Mapping
>>> records = [{"event_id": "e1", "ts": 1793491200000, "type": "click", "user_id": "u1"}]
>>> out = EventValidator(Mapping()).validate(records, [1793491200000000])
>>> out.events.num_rows, out.rejects, to_messages(out.events)[0][0]
(1, [], b'u1')
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from clickloop.events.mapping import Mapping
from clickloop.events.schema import EVENT_SCHEMA, FIELDS, MAX_ID, PROPS_TYPE, UTC_US
from clickloop.events.validate import validate

# Stand-ins for values of a type the contract never accepts in a field (a list
# as user_id, a boolean as ts, …). Each makes the validator report that
# field's bad_* reason at its usual priority; the detail is then rewritten to
# quote the original value. U+E000 is a private-use character no client sends.
_MARK: Final = "\ue000"
_BAD_ID: Final = _MARK * (MAX_ID + 1)  # longer than any identifier may be
_BAD_TEXT: Final = _MARK  # fails the type pattern, the URL patterns and every time format
_BAD_PROPS: Final = '["\ue000"]'  # JSON text that is not an object
_INT64: Final = 2**63

_ID_FIELDS: Final = frozenset({"event_id", "user_id", "session_id"})
_TEXT_FIELDS: Final = frozenset({"type", "url", "referrer"})


@dataclass
class Outcome:
    """What :meth:`EventValidator.validate` made of a list of records.

    ``events`` holds the valid records as canonical events, in input order;
    ``accepted[i]`` is the input position of ``events`` row ``i``; each reject
    is ``(position, reason, detail)``.
    """

    events: pa.Table
    accepted: np.ndarray
    rejects: list[tuple[int, str, str]]


class EventValidator:
    """Validate JSON records against the event contract through a source's mapping.

    Values are first brought to one Arrow type per column, in Python, so that
    records of any shape share one vectorised validation: identifiers become
    strings (integers spelt in decimal), ``props`` a map of strings, properties
    folded from other keys their spelling — floats spelt as Arrow spells them,
    so an event gets the same props through the collector as through a batch
    import of the same JSON. A value of a type a field never accepts (a list as
    ``user_id``, a boolean as ``ts``) is replaced by a stand-in that fails that
    field's check at its usual priority, and the reject's detail quotes the
    original. Records are validated in groups by the kind of their ``ts``
    (integer, float, text), so no record's outcome depends on its batch-mates.

    >>> v = EventValidator(Mapping())
    >>> record = {"event_id": [1], "ts": 1793491200, "type": "click", "user_id": "u"}
    >>> v.validate([record], [1793491200_000000]).rejects[0][1:]
    ('bad_event_id', 'event_id=[1]: event_id must be a string or integer of at most 128 characters')
    """

    def __init__(self, mapping: Mapping, *, max_future: timedelta = timedelta(hours=1)) -> None:
        self.mapping = mapping
        self.max_future = max_future
        self.ts_format = mapping.format_of("ts")
        self.roles: dict[str, str] = {}  # record key → the field whose rules it follows
        for name in FIELDS:
            if name == "received_at":
                continue  # always the collector's arrival time
            spec = mapping.columns.get(name)  # type: ignore[call-overload]
            if spec is None:
                self.roles.setdefault(name, name)
            elif spec.from_ is not None:
                self.roles.setdefault(spec.from_, name)
        # a key mapped to received_at is read by nothing: the arrival time wins
        self.ignored = {
            spec.from_
            for name, spec in mapping.columns.items()
            if name == "received_at" and spec.from_ is not None and spec.from_ not in self.roles
        }
        listed = mapping.props if isinstance(mapping.props, list) else []
        self.listed_props = [k for k in listed if k not in self.roles and k not in self.ignored]

    # public ----------------------------------------------------------------------------

    def validate(self, records: Sequence[dict[str, Any]], arrivals_us: Sequence[int]) -> Outcome:
        """Validate ``records`` whose arrival times (UTC µs) are ``arrivals_us``."""
        n = len(records)
        if n == 0:
            return Outcome(EVENT_SCHEMA.empty_table(), np.zeros(0, np.int64), [])
        cols = _Columns(n)
        self._fill(cols, records)
        tables: list[pa.Table] = []
        positions: list[np.ndarray] = []
        rejects: list[tuple[int, str, str]] = []
        arrivals = np.asarray(arrivals_us, dtype=np.int64)
        for rows, bad_props in cols.groups():
            table = cols.table(rows, bad_props)
            mapped = self.mapping.apply(table, where="request")
            idx = mapped.schema.get_field_index("received_at")
            arrival = pa.array(arrivals if rows is None else arrivals[rows]).cast(UTC_US)
            mapped = mapped.set_column(idx, "received_at", arrival)
            out = validate(
                mapped,
                ts_format=self.ts_format,
                timezone=self.mapping.timezone,
                max_future=self.max_future,
            )
            where = np.arange(n) if rows is None else rows
            tables.append(out.events)
            positions.append(where[out.accepted])
            for r, reason, detail in zip(out.rejected, out.reasons, out.details, strict=True):
                pos = int(where[r])
                rejects.append((pos, reason, _rewrite(detail, reason, cols.originals.get(pos))))
        events = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        accepted = np.concatenate(positions)
        if len(tables) > 1:  # restore input order (one user's events stay in order)
            order = np.argsort(accepted, kind="stable")
            events, accepted = events.take(pa.array(order)), accepted[order]
        rejects.sort()
        return Outcome(_no_empty_props(events), accepted.astype(np.int64), rejects)

    # internals -------------------------------------------------------------------------

    def _fill(self, cols: _Columns, records: Sequence[dict[str, Any]]) -> None:
        n = len(records)
        for key, role in self.roles.items():
            raw = [r.get(key) for r in records]
            if role == "props":
                cols.props(key, raw)
                continue
            kinds = set(map(type, raw))
            if kinds <= _TEXT_KINDS:  # the usual case: strings (or absent) need no work
                cols.lists[key] = raw
                continue
            if role == "ts" and kinds <= _INT_KINDS and _fits_int64(raw):
                cols.lists[key] = raw
                cols.ts_kind[np.fromiter((v is not None for v in raw), bool, n)] = 1
                continue
            values: list[Any] = [None] * n
            for i, v in enumerate(raw):
                if v is None:
                    continue
                if role in _ID_FIELDS:
                    out = _id(v)
                elif role in _TEXT_FIELDS:
                    out = v if isinstance(v, str) else _BAD_TEXT
                else:  # ts
                    out, cols.ts_kind[i] = _time(v)
                if out is _BAD_ID or out is _BAD_TEXT:
                    cols.originals.setdefault(i, {})[role] = v
                values[i] = out
            cols.lists[key] = values
        extra_keys: list[str]
        if self.mapping.props == "rest":
            seen: dict[str, None] = {}
            for record in records:
                for key in record:
                    if key not in self.roles and key not in FIELDS and key not in self.ignored:
                        seen[key] = None
            extra_keys = list(seen)
        else:
            extra_keys = self.listed_props
        for key in extra_keys:
            values = [r.get(key) for r in records]
            if not set(map(type, values)) <= _TEXT_KINDS:
                for i, v in enumerate(values):
                    cols.spell(v, values, i)
            cols.lists[key] = values
        for key in self.ignored:
            cols.lists[key] = [None] * n
        cols.finish()


class _Columns:
    """The columns of one batch of records, built value by value, then sliced into groups."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.lists: dict[str, list[Any]] = {}
        self.props_key: str | None = None
        self.props_map: pa.MapArray | None = None
        self.bad_props = np.zeros(n, bool)
        self.ts_kind = np.zeros(n, np.int8)  # 0 text or missing, 1 integer, 2 float
        self.originals: dict[int, dict[str, Any]] = {}  # row → field → the replaced value
        self._floats: list[float] = []
        self._float_slots: list[tuple[list[Any], int]] = []
        self._props: tuple[list[int], list[str], list[Any], list[bool]] | None = None

    def spell(self, v: Any, target: list[Any], i: int) -> None:
        """``target[i]`` = the property spelling of ``v`` (floats filled in by :meth:`finish`)."""
        if v is None or isinstance(v, str):
            target[i] = v
        elif isinstance(v, bool):
            target[i] = "true" if v else "false"
        elif isinstance(v, int):
            target[i] = str(v)
        elif isinstance(v, float):
            self._floats.append(v)
            self._float_slots.append((target, i))
        else:  # nested: compact JSON text, as the contract keeps it
            target[i] = _dumps(v)

    def props(self, key: str, values: list[Any]) -> None:
        offsets: list[int] = [0]
        keys: list[str] = []
        spelled: list[Any] = []
        nulls: list[bool] = []
        add_key, add_value = keys.append, spelled.append  # the hot loop of a batch
        for i, v in enumerate(values):
            if type(v) is dict:
                for k, x in v.items():
                    t = type(x)
                    if t is str:
                        add_key(k)
                        add_value(x)
                    elif t is int:
                        add_key(k)
                        add_value(str(x))
                    elif x is not None:
                        add_key(k)
                        add_value(None)
                        self.spell(x, spelled, len(spelled) - 1)
                nulls.append(False)
            else:
                obj = _props_object(v)
                if obj is None or obj is _BAD_PROPS:
                    if obj is _BAD_PROPS:
                        self.bad_props[i] = True
                        self.originals.setdefault(i, {})["props"] = v
                    nulls.append(True)
                else:  # JSON text: spelt as the validator spells JSON text
                    for k, x in obj.items():
                        if x is not None:
                            add_key(k)
                            add_value(x if isinstance(x, str) else _dumps(x))
                    nulls.append(False)
            offsets.append(len(keys))
        self.props_key = key
        self._props = (offsets, keys, spelled, nulls)

    def finish(self) -> None:
        if self._floats:  # one vectorised cast: Arrow's spelling of doubles
            texts = pa.array(self._floats, pa.float64()).cast(pa.string()).to_pylist()
            for (target, i), text in zip(self._float_slots, texts, strict=True):
                target[i] = text
        if self._props is not None:
            offsets, keys, spelled, nulls = self._props
            self.props_map = pa.MapArray.from_arrays(
                pa.array(offsets, pa.int32()),
                pa.array(keys, pa.string()),
                pa.array(spelled, pa.string()),
                type=PROPS_TYPE,
                mask=pa.array(nulls, pa.bool_()) if any(nulls) else None,
            )

    def groups(self) -> list[tuple[np.ndarray | None, bool]]:
        """Row groups of one ts kind and props state each (``None``: all rows)."""
        key = self.ts_kind.astype(np.int16) + 3 * self.bad_props
        kinds = np.unique(key)
        if len(kinds) == 1:
            return [(None, bool(kinds[0] >= 3))]
        return [(np.nonzero(key == k)[0], bool(k >= 3)) for k in kinds]

    def table(self, rows: np.ndarray | None, bad_props: bool) -> pa.Table:
        size = self.n if rows is None else len(rows)
        arrays: dict[str, pa.Array] = {}
        for key, values in self.lists.items():
            picked = values if rows is None else [values[i] for i in rows]
            has = any(v is not None for v in picked)
            arrays[key] = pa.array(picked) if has else pa.nulls(size)
        if self.props_key is not None:
            if bad_props:  # text that is not a JSON object: the validator's bad_props
                arrays[self.props_key] = pa.array([_BAD_PROPS] * size, pa.string())
            else:
                assert self.props_map is not None
                m = self.props_map
                arrays[self.props_key] = m if rows is None else m.take(pa.array(rows))
        if not arrays:  # every field a constant: rows without columns
            return pa.table({"_": pa.nulls(size)}).drop(["_"])
        return pa.table(arrays)


def _no_empty_props(events: pa.Table) -> pa.Table:
    """Empty props are no props (null): whether a table-wide mapping gives a record an
    empty map depends on the other records in the table; a collector's answer must not."""
    props = events.column("props").combine_chunks()
    null = np.asarray(props.is_null().to_numpy(zero_copy_only=False), bool)
    empty = np.diff(np.asarray(props.offsets.to_numpy(zero_copy_only=False))) == 0
    if not (empty & ~null).any():
        return events
    mask = empty | null
    cleaned = pa.MapArray.from_arrays(
        props.offsets, props.keys, props.items, type=PROPS_TYPE, mask=pa.array(mask)
    )
    return events.set_column(events.schema.get_field_index("props"), events.field("props"), cleaned)


_TEXT_KINDS: Final = frozenset({str, type(None)})
_INT_KINDS: Final = frozenset({int, type(None)})


def _fits_int64(values: list[Any]) -> bool:
    ints = [v for v in values if v is not None]
    return not ints or (min(ints) >= -_INT64 and max(ints) < _INT64)


def _id(v: Any) -> Any:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return _BAD_ID
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and v.is_integer() and abs(v) < 2.0**53:
        return str(int(v))
    return _BAD_ID


def _time(v: Any) -> tuple[Any, int]:
    if isinstance(v, str):
        return v, 0
    if isinstance(v, bool):
        return _BAD_TEXT, 0
    if isinstance(v, int):
        if -_INT64 <= v < _INT64:
            return v, 1
        return float(v), 2  # beyond int64: as a float, like a JSON reader would
    if isinstance(v, float):
        return v, 2
    return _BAD_TEXT, 0


def _props_object(v: Any) -> Any:
    """A props value as a dict, ``None`` (absent) or ``_BAD_PROPS``.

    Text is read as JSON (as CSV exports carry it): blank is absent, anything
    but an object is bad — the validator's rules for props text.
    """
    if v is None or isinstance(v, dict):
        return v
    if isinstance(v, str):
        if not v.strip():
            return None
        try:
            v = orjson.loads(v)
        except orjson.JSONDecodeError:
            return _BAD_PROPS
        return v if isinstance(v, dict) else _BAD_PROPS
    return _BAD_PROPS


def _dumps(v: Any) -> str:
    try:
        return orjson.dumps(v).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits somewhere inside
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def _rewrite(detail: str, reason: str, originals: dict[str, Any] | None) -> str:
    """Quote the client's value instead of the stand-in in the validator's detail."""
    if not originals:
        return detail
    for name, value in originals.items():
        if reason == f"bad_{name}" and ": " in detail:
            return f"{name}={_short(value)}: {detail.split(': ', 1)[1]}"
    return detail


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- bus messages -----------------------------------------------------------------------


def to_messages(events: pa.Table) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` pairs for the ``events`` topic: key ``user_id``, value canonical JSON.

    Every canonical field is present (``null`` when absent); times are ISO-8601
    in UTC with microseconds and a ``Z``; ``props`` is an object of strings.
    The JSON is assembled with Arrow string kernels; rows holding a character
    JSON must escape (a quote, a backslash, a control character) are spelt by
    orjson instead — the same bytes orjson gives for every row (props keys repeated
    by a mapping stay repeated, where a dict would keep the last).
    """
    n = events.num_rows
    if n == 0:
        return []
    if n < _VECTOR_MIN_ROWS:  # a few rows: ~40 kernel calls cost more than orjson
        users = events.column("user_id").cast(pa.binary()).to_pylist()
        return list(zip(users, _messages_slow(events), strict=True))
    col = {name: events.column(name).combine_chunks() for name in events.column_names}
    escape = np.zeros(n, bool)
    pieces: list[Any] = []
    for name in FIELDS:
        if name in ("ts", "received_at"):
            pieces += [f',"{name}":"', _iso(col[name]), '"']
        elif name == "props":
            text, bad = _props_json(col[name])
            pieces += [',"props":', text]
            escape |= bad
        else:
            text, bad = _quoted(col[name])
            pieces += [f',"{name}":', text]
            escape |= bad
    pieces[0] = '{"event_id":'
    pieces.append("}")
    values: list[bytes] = pc.binary_join_element_wise(*pieces, "").cast(pa.binary()).to_pylist()
    if escape.any():
        rows = np.nonzero(escape)[0]
        slow = _messages_slow(events.take(pa.array(rows)))
        for i, value in zip(rows, slow, strict=True):
            values[i] = value
    keys: list[bytes] = col["user_id"].cast(pa.binary()).to_pylist()
    return list(zip(keys, values, strict=True))


_VECTOR_MIN_ROWS: Final = 64
_ESCAPE: Final = r'["\\\x00-\x1f]'  # what JSON strings must escape (RE2 syntax)


def _quoted(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """``"value"`` or ``null`` per row, and which rows need escaping."""
    bad = np.asarray(
        pc.match_substring_regex(values, _ESCAPE).fill_null(False).to_numpy(zero_copy_only=False),
        bool,
    )
    return pc.fill_null(pc.binary_join_element_wise('"', values, '"', ""), "null"), bad


def _props_json(props: pa.MapArray) -> tuple[pa.Array, np.ndarray]:
    """``{"k":"v",…}`` or ``null`` per row, and which rows need escaping."""
    keys, items = props.keys, props.items
    pairs = pc.binary_join_element_wise('"', keys, '":"', items, '"', "")
    bad_pair = np.asarray(
        pc.or_(pc.match_substring_regex(keys, _ESCAPE), pc.match_substring_regex(items, _ESCAPE))
        .fill_null(True)
        .to_numpy(zero_copy_only=False),
        bool,
    )
    offsets = np.asarray(props.offsets.to_numpy(zero_copy_only=False), np.int64)
    counts = np.concatenate([[0], np.cumsum(bad_pair, dtype=np.int64)])
    bad = counts[offsets[1:]] - counts[offsets[:-1]] > 0
    mask = props.is_null()
    joined = pc.binary_join(pa.ListArray.from_arrays(props.offsets, pairs, mask=mask), ",")
    return pc.fill_null(pc.binary_join_element_wise("{", joined, "}", ""), "null"), bad


def _messages_slow(events: pa.Table) -> list[bytes]:
    """orjson's spelling of each row (for rows with characters JSON must escape)."""
    out = []
    for row in events.to_pylist():
        props = row["props"]
        row["ts"] = _iso_one(row["ts"])
        row["received_at"] = _iso_one(row["received_at"])
        row["props"] = None if props is None else dict(props)
        out.append(orjson.dumps(row))
    return out


def _iso_one(ts: Any) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _iso(ts: pa.Array) -> pa.Array:
    """``2026-11-01T08:15:02.123456Z`` (casting the zone-less value is ~10x faster)."""
    text = pc.cast(ts.cast(pa.timestamp("us")), pa.string())
    return pc.binary_join_element_wise(pc.utf8_replace_slice(text, 10, 11, "T"), "Z", "")
