"""Write generated chunks as JSONL, CSV or Parquet — vectorised and byte-deterministic.

Records keep their defects: a malformed timestamp is written as the bad text,
a missing id is an absent key (JSONL) or an empty cell (CSV), a duplicate is a
second identical line.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

Format = Literal["jsonl", "csv", "parquet"]
FORMATS: Final = ("jsonl", "csv", "parquet")
COLUMNS: Final = (
    "event_id",
    "ts",
    "received_at",
    "type",
    "user_id",
    "session_id",
    "url",
    "referrer",
    "props",
)


def iso(ts: pa.Array) -> pa.Array:
    """``2026-11-01T08:15:02.123Z`` for millisecond timestamps."""
    # casting is ~10x faster than pc.strftime; "2026-11-01 08:15:02.123" → "…T…Z"
    text = pc.cast(ts.cast(pa.timestamp("ms")), pa.string())
    return pc.binary_join_element_wise(pc.utf8_replace_slice(text, 10, 11, "T"), "Z", "")


def text_columns(chunk: pa.Table) -> dict[str, pa.Array]:
    """The record fields as text, defects included (bad timestamp text wins over ts)."""
    cols = {
        name: chunk.column(name).combine_chunks()
        for name in ("event_id", "type", "user_id", "session_id", "url", "referrer", "props")
    }
    ts_text = chunk.column("ts_text").combine_chunks()
    cols["ts"] = pc.coalesce(ts_text, iso(chunk.column("ts").combine_chunks()))
    cols["received_at"] = iso(chunk.column("received_at").combine_chunks())
    return cols


def jsonl_bytes(chunk: pa.Table) -> memoryview:
    """One JSON object per line. Generated strings never need escaping (no quotes, no
    backslashes, no control characters), which the tests check by parsing every line."""
    cols = text_columns(chunk)
    pieces = []
    for name in COLUMNS:
        if name == "props":
            pieces.append(pc.binary_join_element_wise('"props":', cols[name], ""))
        else:
            pieces.append(pc.binary_join_element_wise(f'"{name}":"', cols[name], '"', ""))
    body = pc.binary_join_element_wise(*pieces, ",", null_handling="skip")
    lines = pc.binary_join_element_wise("{", body, "}\n", "")
    return string_bytes(lines)


def string_bytes(lines: pa.Array) -> memoryview:
    """The concatenated bytes of a string array's values, without copying."""
    arr = lines.cast(pa.string()) if not isinstance(lines, pa.StringArray) else lines
    offsets = arr.buffers()[1]
    data = arr.buffers()[2]
    off = np.frombuffer(offsets, dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    return memoryview(data)[int(off[0]) : int(off[-1])]


def write_chunk(chunk: pa.Table, path: Path, fmt: Format, *, compress: bool = False) -> int:
    """Write one chunk to ``path``; return its size in bytes."""
    if fmt == "parquet":
        table = parquet_table(chunk)
        pq.write_table(table, path, compression="zstd", write_statistics=True)
        return path.stat().st_size
    if fmt == "jsonl":
        payload: bytes | memoryview = jsonl_bytes(chunk)
    else:
        cols = text_columns(chunk)
        sink = pa.BufferOutputStream()
        pacsv.write_csv(
            pa.table({c: cols[c] for c in COLUMNS}),
            sink,
            pacsv.WriteOptions(include_header=True, quoting_style="needed"),
        )
        payload = sink.getvalue()
    if compress:
        with (
            path.open("wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=6) as gz,
        ):
            gz.write(payload)
    else:
        with path.open("wb") as f:
            f.write(payload)
    return path.stat().st_size


def parquet_table(chunk: pa.Table) -> pa.Table:
    """Typed Parquet: timestamps as timestamp[ms, UTC] (a bad timestamp text becomes null)."""
    cols = text_columns(chunk)
    ts = pc.if_else(
        pc.is_null(chunk.column("ts_text")),
        chunk.column("ts"),
        pa.scalar(None, chunk.column("ts").type),
    )
    return pa.table(
        {
            "event_id": cols["event_id"],
            "ts": ts,
            "received_at": chunk.column("received_at"),
            "type": cols["type"],
            "user_id": cols["user_id"],
            "session_id": cols["session_id"],
            "url": cols["url"],
            "referrer": cols["referrer"],
            "props": cols["props"],
        }
    )
