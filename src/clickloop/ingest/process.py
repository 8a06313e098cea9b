"""From parsed records to the two piles the lake keeps: canonical events and quarantine.

Both acquisition paths — batch files and the event stream — run the same
steps, so the same record gets the same outcome whichever way it came:

1. parse (:mod:`clickloop.ingest.parse` for JSON; pyarrow for CSV and Parquet);
2. map and validate through the source's :class:`~clickloop.events.Mapping`;
3. refused records become quarantine rows holding their original bytes, the
   reason code, a detail and where they came from.

Deduplication happens later, in the lake transaction, because it depends on
what the lake already holds.

>>> out = process_lines(b'{"event_id":"e1","ts":"2026-11-01T00:00:00Z","type":"click",'
...                     b'"user_id":"u"}\\n{oops\\n', Mapping(), source="files",
...                     origin=lambda line: f"a.jsonl:{line + 1}")
>>> out.events.num_rows, out.rejects.column("reason").to_pylist(), out.records
(1, ['unparseable'], 2)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from clickloop.events.mapping import Mapping
from clickloop.events.schema import EVENT_SCHEMA
from clickloop.events.validate import Validated
from clickloop.ingest.parse import Parsed, parse_lines, parse_messages
from clickloop.lake.idindex import id_hash
from clickloop.lake.quarantine import QUARANTINE_SCHEMA, rejects_table


@dataclass
class Outcome:
    """Records sorted into valid events and quarantine rows (``records`` came in)."""

    events: pa.Table
    rejects: pa.Table
    records: int
    hashes: np.ndarray | None = None  # id hashes of ``events`` (computed off the writer thread)
    lines: int = 0  # JSONL: lines the input held, blank ones included

    def __post_init__(self) -> None:
        assert self.events.num_rows + self.rejects.num_rows == self.records, (
            self.events.num_rows,
            self.rejects.num_rows,
            self.records,
        )


def empty_outcome() -> Outcome:
    return Outcome(EVENT_SCHEMA.empty_table(), QUARANTINE_SCHEMA.empty_table(), 0)


def process_lines(
    data: bytes,
    mapping: Mapping,
    *,
    source: str,
    origin: Callable[[int], str],
    received_at: datetime | None = None,
    max_future: timedelta = timedelta(hours=1),
) -> Outcome:
    """JSONL bytes → outcome; ``origin(line)`` names a 0-based line of ``data``."""
    parsed = parse_lines(data)
    view = memoryview(data)
    assert parsed.starts is not None and parsed.ends is not None and parsed.lines is not None
    starts, ends, lines = parsed.starts, parsed.ends, parsed.lines

    def payload(i: int) -> bytes:
        return bytes(view[starts[i] : ends[i]])

    out = _finish(
        parsed,
        mapping,
        source=source,
        payload=payload,
        origin=lambda i: origin(int(lines[i])),
        received_at=received_at,
        max_future=max_future,
    )
    out.lines = parsed.total_lines
    return out


def process_messages(
    values: Sequence[bytes],
    mapping: Mapping,
    *,
    source: str,
    origins: Sequence[str] | None = None,
    origin: Callable[[int], str] | None = None,
    received_at: datetime | None = None,
    max_future: timedelta = timedelta(hours=1),
) -> Outcome:
    """Bus message values (one JSON object each) → outcome. Where each came from is
    ``origins[i]``, or ``origin(i)`` — asked only for the rejects, so cheaper."""
    parsed = parse_messages(values)
    if origin is None:
        names = origins
        origin = (lambda i: names[i]) if names is not None else (lambda i: f"message {i}")
    return _finish(
        parsed,
        mapping,
        source=source,
        payload=lambda i: values[i],
        origin=origin,
        received_at=received_at,
        max_future=max_future,
    )


def process_table(
    table: pa.Table,
    mapping: Mapping,
    *,
    source: str,
    origin: Callable[[int], str],
    payload: Callable[[pa.Table, np.ndarray], list[bytes]] | None = None,
    received_at: datetime | None = None,
    max_future: timedelta = timedelta(hours=1),
    where: str = "input",
) -> Outcome:
    """A table of records (CSV, Parquet, Arrow) → outcome. A reject's payload is its row
    as a JSON object unless ``payload(table, rows)`` says otherwise."""
    now = received_at or datetime.now(UTC)
    v = mapping.validate_table(table, received_at=now, max_future=max_future, where=where)
    rows = v.rejected
    payloads = (payload or row_json)(table, rows) if len(rows) else []
    rejects = rejects_table(
        payloads, v.reasons, v.details, source, now, [origin(int(r)) for r in rows]
    )
    return Outcome(v.events, rejects, table.num_rows, _hashes(v.events))


def row_json(table: pa.Table, rows: np.ndarray) -> list[bytes]:
    """Rows of ``table`` as JSON objects (their cells as read)."""
    picked = table.take(pa.array(rows, pa.int64())).to_pylist()
    return [orjson.dumps(r, default=str, option=orjson.OPT_NON_STR_KEYS) for r in picked]


def _finish(
    parsed: Parsed,
    mapping: Mapping,
    *,
    source: str,
    payload: Callable[[int], bytes],
    origin: Callable[[int], str],
    received_at: datetime | None,
    max_future: timedelta,
) -> Outcome:
    now = received_at or datetime.now(UTC)
    events: list[pa.Table] = []
    bad: list[tuple[int, str, str]] = list(parsed.rejects)
    for table, index in parsed.pieces:
        v: Validated = mapping.validate_table(table, received_at=now, max_future=max_future)
        if v.events.num_rows:
            events.append(v.events)
        if len(v.rejected):
            records = v.rejected if index is None else index[v.rejected]
            bad += zip(records.tolist(), v.reasons, v.details, strict=True)
    bad.sort()
    rejects = rejects_table(
        [payload(i) for i, _, _ in bad],
        [r for _, r, _ in bad],
        [d for _, _, d in bad],
        source,
        now,
        [origin(i) for i, _, _ in bad],
    )
    table = _concat(events)
    return Outcome(table, rejects, parsed.records, _hashes(table))


def _concat(tables: list[pa.Table]) -> pa.Table:
    if not tables:
        return EVENT_SCHEMA.empty_table()
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _hashes(events: pa.Table) -> np.ndarray:
    return id_hash(events.column("event_id"))


def merge_outcomes(outcomes: list[Outcome]) -> Outcome:
    """One outcome from several (in order)."""
    if not outcomes:
        return empty_outcome()
    if len(outcomes) == 1:
        return outcomes[0]
    hashes: list[Any] = [o.hashes for o in outcomes]
    return Outcome(
        _concat([o.events for o in outcomes]),
        pa.concat_tables([o.rejects for o in outcomes]),
        sum(o.records for o in outcomes),
        None if any(h is None for h in hashes) else np.concatenate(hashes),
    )
