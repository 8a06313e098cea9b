"""Parse JSON records — JSONL lines or bus messages — fast, and never lose one.

The fast path hands a whole block to pyarrow's JSON reader (C++, one pass).
It is trusted only when it produced exactly one row per record; otherwise
(a malformed line, a value that is not an object, a type that changes from
record to record, a record spread over several lines, invalid UTF-8) the
block falls back to checking each record with orjson:

* not JSON → ``unparseable``; JSON but not an object → ``not_an_object``;
* the good records are parsed again with pyarrow, and where their types still
  clash the set is halved until every piece parses (pieces are validated
  separately, so a record's outcome never depends on its neighbours).

>>> p = parse_lines(b'{"event_id": "a"}\\n\\nnot json\\n[1]\\n')
>>> [t.num_rows for t, _ in p.pieces], p.records
([1], 3)
>>> [(r, reason) for r, reason, _ in p.rejects]
[(1, 'unparseable'), (2, 'not_an_object')]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pajson

from clickloop.events.schema import FIELDS, Reason

_NEWLINE: Final = 10
_OPEN_BRACE: Final = 123
_WHITESPACE: Final = b" \t\r\n"


@dataclass
class Parsed:
    """Parsed records: tables with the record index of each row, and the rejects.

    ``records`` counts records (for lines: the non-blank ones); every record
    index ``0 … records-1`` is in exactly one piece row or one reject.
    """

    records: int
    pieces: list[tuple[pa.Table, np.ndarray | None]] = field(default_factory=list)
    rejects: list[tuple[int, str, str]] = field(default_factory=list)  # (record, reason, detail)
    starts: np.ndarray | None = None  # byte offset of each record in the block (lines only)
    ends: np.ndarray | None = None
    lines: np.ndarray | None = None  # 0-based line number of each record in the block
    total_lines: int = 0  # lines in the block, blank ones included


def line_bounds(
    data: bytes | memoryview,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, bool]:
    """``(starts, ends, line_numbers, total_lines, braced)`` of the non-blank lines of
    ``data``; ``braced`` when every one of them starts with ``{``."""
    arr = np.frombuffer(data, np.uint8)
    if len(arr) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, 0, True
    nl = np.flatnonzero(arr == _NEWLINE)
    starts = np.concatenate([[0], nl + 1]).astype(np.int64)
    ends = np.concatenate([nl, [len(arr)]]).astype(np.int64)
    if starts[-1] == len(arr):  # data ends with a newline: no final empty line
        starts, ends = starts[:-1], ends[:-1]
    total = len(starts)
    numbers = np.arange(total, dtype=np.int64)
    # a JSONL line almost always starts with "{": only the others need a closer look
    first = np.where(ends > starts, arr[np.minimum(starts, len(arr) - 1)], _NEWLINE)
    odd = np.flatnonzero(first != _OPEN_BRACE)
    braced = True
    if len(odd):
        blank = np.zeros(total, bool)
        view = memoryview(data)
        for i in odd:
            blank[i] = not bytes(view[starts[i] : ends[i]]).strip(_WHITESPACE)
        braced = bool(blank[odd].all())
        if blank.any():
            keep = ~blank
            starts, ends, numbers = starts[keep], ends[keep], numbers[keep]
    return starts, ends, numbers, total, braced


def parse_lines(data: bytes) -> Parsed:
    """Parse JSONL (blank lines are not records)."""
    starts, ends, numbers, total, braced = line_bounds(data)
    n = len(starts)
    out = Parsed(n, starts=starts, ends=ends, lines=numbers, total_lines=total)
    if n == 0:
        return out
    # the fast path is trusted only when every record starts like an object (pyarrow
    # reads a bare `null` line as an empty row) and yields exactly one row each
    table = _read(data) if braced else None
    if table is not None and table.num_rows == n:
        out.pieces.append((table, None))
        return out
    view = memoryview(data)
    _fallback(out, [view[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)])
    return out


def parse_messages(values: Sequence[bytes]) -> Parsed:
    """Parse one JSON object per message (bus records; a blank message is unparseable)."""
    n = len(values)
    out = Parsed(n)
    if n == 0:
        return out
    joined = b"\n".join(values)
    # one row per message can only be trusted when no message spans lines or is blank
    # (or is a bare `null`): every message must start with "{" and hold no newline
    arr = np.frombuffer(joined, np.uint8)
    starts = np.zeros(n, np.int64)
    np.cumsum(np.fromiter(map(len, values), np.int64, n)[:-1] + 1, out=starts[1:])
    braced = len(arr) > 0 and bool((arr[np.minimum(starts, len(arr) - 1)] == _OPEN_BRACE).all())
    if braced and int(np.count_nonzero(arr == _NEWLINE)) == n - 1:
        table = _read(joined)
        if table is not None and table.num_rows == n:
            out.pieces.append((table, None))
            return out
    _fallback(out, list(values))
    return out


def _read(data: bytes | memoryview) -> pa.Table | None:
    # pyarrow's JSON reader does not check UTF-8: check it here (ASCII, the usual case,
    # is a fast scan), so invalid text is refused by the per-record path instead
    raw = bytes(data) if isinstance(data, memoryview) else data
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        table = pajson.read_json(
            pa.BufferReader(data),
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(data) + 1),
        )
        # a structural check (cheap: no data scan); the reader has been seen to build an
        # inconsistent list column from a list of nulls
        table.validate()
        return table
    except (pa.ArrowInvalid, UnicodeDecodeError, pa.ArrowNotImplementedError):
        return None


def _fallback(out: Parsed, records: Sequence[bytes | memoryview]) -> None:
    good: list[int] = []
    objects: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        try:
            value = orjson.loads(rec)
        except orjson.JSONDecodeError as exc:
            out.rejects.append((i, Reason.UNPARSEABLE.value, f"not JSON: {exc}"))
            continue
        if not isinstance(value, dict):
            out.rejects.append(
                (i, Reason.NOT_AN_OBJECT.value, f"a JSON {_kind(value)}, not an object")
            )
            continue
        good.append(i)
        objects.append(value)
    if not good:
        return
    idx = np.asarray(good, np.int64)
    if len(good) < len(records):  # the usual case: a few bad records among good ones
        table = _read(b"\n".join(bytes(records[i]) for i in good))
        if table is not None and table.num_rows == len(good):
            out.pieces.append((table, idx))
            return
    _typed_groups(out, objects, idx)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else "number"


def _typed_groups(out: Parsed, objects: list[dict[str, Any]], idx: np.ndarray) -> None:
    """Objects whose field types clash: canonical fields keep their types (one table per
    combination of types), everything else becomes text in its JSON spelling — which
    is what props hold anyway — so a record's outcome never depends on its neighbours."""
    rows = [_normalise(o) for o in objects]
    majority: dict[str, type] = {}
    for name in _TYPED:
        counts: dict[type, int] = {}
        for r in rows:
            v = r.get(name)
            if v is not None:
                counts[type(v)] = counts.get(type(v), 0) + 1
        if counts:
            majority[name] = max(counts, key=lambda t: counts[t])
    groups: dict[tuple[type | None, ...], list[int]] = {}
    for i, r in enumerate(rows):
        sig = tuple(type(r[n]) if r.get(n) is not None else majority.get(n) for n in _TYPED)
        groups.setdefault(sig, []).append(i)
    for members in groups.values():
        try:
            out.pieces.append((_table([rows[i] for i in members]), idx[members]))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            for i in members:  # e.g. nested values of clashing shapes: one record at a time
                try:
                    out.pieces.append((_table([rows[i]]), idx[[i]]))
                except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                    reason = Reason.UNPARSEABLE.value
                    out.rejects.append((int(idx[i]), reason, f"JSON that cannot be typed: {exc}"))
    out.rejects.sort()


_TYPED: Final = tuple(f for f in FIELDS if f != "props")
_IDS: Final = frozenset({"event_id", "user_id", "session_id"})


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as a table over the union of their keys (``from_pylist`` would only look at the
    first row's); with no keys at all, one null column keeps the row count."""
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    if not keys:
        return pa.table({"event_id": pa.nulls(len(rows))})
    return pa.table({k: [r.get(k) for r in rows] for k in keys})


def _normalise(obj: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, v in obj.items():
        if key in _TYPED:
            if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
                v = str(v)
            elif isinstance(v, dict | list):
                # never valid here; keep it invalid without a nested type that may not
                # be typeable: ids get a boolean (refused as "not a string or integer"),
                # other fields the JSON text (refused as not a time / URL / type)
                v = True if key in _IDS else orjson.dumps(v).decode()
            row[key] = v
        elif key == "props":
            row[key] = orjson.dumps(v).decode() if isinstance(v, dict) else v
        else:
            row[str(key)] = _text(v)
    return row


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return orjson.dumps(v).decode()
