"""Batch scoring: a table of (entity, time, request data) in, scores out, with features
joined point-in-time exactly as in training.

>>> predict_batch(project, "ctr@champion", "requests.parquet", "scores.parquet")  # doctest: +SKIP
{'model': 'ctr:3', 'rows': 120000, 'output': 'scores.parquet', ...}
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from clickloop.errors import InvalidInputError, UsageError
from clickloop.events.schema import UTC_US
from clickloop.events.timestamps import parse_timestamps
from clickloop.training.examples import TS
from clickloop.training.join import FeatureFn
from clickloop.training.scoring import score_examples

if TYPE_CHECKING:
    from clickloop.project import Project

log = logging.getLogger(__name__)
FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


def _format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(
            f"{path}: unknown file type {path.suffix!r}", hint="use .parquet, .csv or .jsonl"
        )
    return fmt


def read_table(path: Path) -> pa.Table:
    if not path.exists():
        raise UsageError(f"--input {path} does not exist")
    fmt = _format(path)
    try:
        if fmt == "parquet":
            return pq.read_table(path)
        if fmt == "csv":
            return pacsv.read_csv(path)
        return pajson.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(f"cannot read {path}: {str(exc).splitlines()[0]}") from exc


def _times(col: pa.ChunkedArray, where: str) -> pa.Array:
    if pa.types.is_timestamp(col.type):
        return pc.cast(col, UTC_US) if col.type.tz else pc.assume_timezone(col, "UTC").cast(UTC_US)
    parsed = parse_timestamps(col.combine_chunks(), "auto", "UTC")
    bad = int(parsed.bad.sum())
    if bad:
        raise InvalidInputError(
            f"{where}: {bad} value(s) are not timestamps",
            hint="use ISO-8601 or epoch seconds/milliseconds",
        )
    return parsed.values


def _props(table: pa.Table, src: Path) -> pa.Table:
    """``props`` as the event contract's map<string, string>, whatever its type in the file."""
    from clickloop.events.props import normalize_props

    col = table.column("props")
    if col.type == pa.map_(pa.string(), pa.string()):
        return table
    props, bad = normalize_props(col.combine_chunks())
    if bad.any():
        first = int(bad.nonzero()[0][0])
        raise InvalidInputError(
            f"{src}: column props: {int(bad.sum())} value(s) are not objects of scalar "
            f"properties (first at row {first + 1})",
            hint='props must be an object such as {"item_id": "17", "position": 2}',
        )
    return table.set_column(table.schema.get_field_index("props"), "props", props)


def read_batches(path: Path, rows: int) -> Iterator[pa.Table]:
    """The input in tables of about ``rows`` rows: Parquet and CSV are streamed (memory stays
    bounded by a batch); JSONL is read whole, as its objects' keys may differ between parts."""
    if not path.exists():
        raise UsageError(f"--input {path} does not exist")
    fmt = _format(path)
    try:
        if fmt == "parquet":
            pf = pq.ParquetFile(path)
            for batch in pf.iter_batches(batch_size=rows):
                yield pa.Table.from_batches([batch])
            return
        if fmt == "csv":
            reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=16 << 20))
            pending = pa.Table.from_batches([], schema=reader.schema)
            emitted = False
            for batch in reader:
                pending = pa.concat_tables([pending, pa.Table.from_batches([batch])])
                while pending.num_rows >= rows:
                    yield pending.slice(0, rows)
                    pending, emitted = pending.slice(rows), True
            if pending.num_rows or not emitted:
                yield pending
            return
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(
            f"cannot read {path}: {str(exc).splitlines()[0]}",
            hint="a CSV column's type is inferred from its first block: a later value of "
            "another type fails; convert the file to Parquet with explicit types",
        ) from exc
    table = read_table(path)
    for start in range(0, max(table.num_rows, 1), rows):
        yield table.slice(start, rows)


class _Writer:
    """Writes scored tables one after the other; the output appears whole or not at all."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fmt = _format(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(path.name + ".partial")
        self._parquet: pq.ParquetWriter | None = None
        self._csv: pacsv.CSVWriter | None = None
        self._csv_schema: pa.Schema | None = None
        self._file: Any = None

    def write(self, table: pa.Table) -> None:
        if self.fmt == "parquet":
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.tmp, table.schema, compression="zstd")
            self._parquet.write_table(table.cast(self._parquet.schema))
        elif self.fmt == "csv":
            flat = table.select(
                [c for c in table.column_names if not pa.types.is_nested(table.column(c).type)]
            )
            if self._csv is None:
                self._csv_schema = flat.schema
                self._csv = pacsv.CSVWriter(self.tmp, flat.schema)
            self._csv.write_table(flat.cast(self._csv_schema))
        else:
            import orjson

            if self._file is None:
                self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()
            for row in table.to_pylist():
                self._file.write(orjson.dumps(row, default=str) + b"\n")

    def close(self, *, keep: bool) -> None:
        for w in (self._parquet, self._csv, self._file):
            if w is not None:
                w.close()
        if keep:
            self.tmp.replace(self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _prepare(table: pa.Table, model: Any, src: Path, first_row: int) -> pa.Table:
    missing = [c for c in (model.entity, TS) if c not in table.column_names]
    if missing:
        raise InvalidInputError(
            f"{src} lacks column(s) {', '.join(missing)}",
            hint=f"each row needs the entity ({model.entity}) and the scoring time (ts); "
            "request data (url, props or flattened props) adds request-time features",
        )
    where = f"{src}: column ts (rows {first_row + 1}–{first_row + table.num_rows})"
    table = table.set_column(table.schema.get_field_index(TS), TS, _times(table.column(TS), where))
    table = table.set_column(
        table.schema.get_field_index(model.entity),
        model.entity,
        pc.cast(table.column(model.entity), pa.string()),
    )
    if "props" in table.column_names:  # JSON objects arrive as structs: the contract's map
        table = _props(table, src)
    return table


def predict_batch(
    project: Project,
    ref: str,
    input_path: str | Path,
    output_path: str | Path,
    *,
    batch_rows: int = 250_000,
    feature_fn: FeatureFn | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score every row of ``input_path`` with model ``ref``; write input columns + ``score``.

    Rows are scored ``batch_rows`` at a time (Parquet and CSV inputs are streamed, so memory
    stays bounded by a batch); the output file appears only once every row is scored.
    """
    from clickloop.registry import load_model

    model = load_model(project, ref)
    src, dst = Path(input_path), Path(output_path)
    writer = _Writer(dst)
    rows, total, done = 0, 0.0, False
    try:
        for table in read_batches(src, batch_rows):
            part = _prepare(table, model, src, rows)
            score = pa.array(score_examples(project, model, part, feature_fn=feature_fn))
            score = score.cast(pa.float64())
            out = part.append_column("score", score)
            out = out.append_column("decision", pc.greater_equal(score, model.threshold))
            out = out.append_column("model", pa.array([model.ref] * out.num_rows, pa.string()))
            writer.write(out)
            rows += out.num_rows
            total += float(pc.sum(score).as_py() or 0.0)
            if progress:
                progress(out.num_rows)
        done = True
    finally:
        writer.close(keep=done)
    mean = total / rows if rows else None
    return {
        "model": model.ref,
        "rows": rows,
        "input": str(src),
        "output": str(dst),
        "mean_score": mean,
        "threshold": model.threshold,
    }
