"""Batch scoring: a table of (entity, time, request data) in, scores out, with features
joined point-in-time exactly as in training.

>>> predict_batch(project, "ctr@champion", "requests.parquet", "scores.parquet")  # doctest: +SKIP
{'model': 'ctr:3', 'rows': 120000, 'output': 'scores.parquet', ...}
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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


def write_table(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    fmt = _format(path)
    if fmt == "parquet":
        pq.write_table(table, tmp, compression="zstd")
    elif fmt == "csv":
        flat = table.select(
            [c for c in table.column_names if not pa.types.is_nested(table.column(c).type)]
        )
        pacsv.write_csv(flat, tmp)
    else:
        import orjson

        with open(tmp, "wb") as f:
            for row in table.to_pylist():
                f.write(orjson.dumps(row, default=str) + b"\n")
    tmp.replace(path)  # the output appears whole or not at all


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
    """Score every row of ``input_path`` with model ``ref``; write input columns + ``score``."""
    from clickloop.registry import load_model

    model = load_model(project, ref)
    src, dst = Path(input_path), Path(output_path)
    table = read_table(src)
    missing = [c for c in (model.entity, TS) if c not in table.column_names]
    if missing:
        raise InvalidInputError(
            f"{src} lacks column(s) {', '.join(missing)}",
            hint=f"each row needs the entity ({model.entity}) and the scoring time (ts); "
            "request data (url, props or flattened props) adds request-time features",
        )
    table = table.set_column(
        table.schema.get_field_index(TS), TS, _times(table.column(TS), f"{src}: column ts")
    )
    table = table.set_column(
        table.schema.get_field_index(model.entity),
        model.entity,
        pc.cast(table.column(model.entity), pa.string()),
    )
    if "props" in table.column_names:  # JSON objects arrive as structs: the contract's map
        table = _props(table, src)
    scores = []
    for start in range(0, table.num_rows, batch_rows):
        part = table.slice(start, batch_rows)
        scores.append(pa.array(score_examples(project, model, part, feature_fn=feature_fn)))
        if progress:
            progress(part.num_rows)
    score = pa.chunked_array(scores, pa.float64()) if scores else pa.chunked_array([], pa.float64())
    out = table.append_column("score", score)
    out = out.append_column("decision", pc.greater_equal(score, model.threshold))
    out = out.append_column("model", pa.array([model.ref] * out.num_rows, pa.string()))
    write_table(out, dst)
    mean = pc.mean(score).as_py() if out.num_rows else None
    return {
        "model": model.ref,
        "rows": out.num_rows,
        "input": str(src),
        "output": str(dst),
        "mean_score": mean,
        "threshold": model.threshold,
    }
