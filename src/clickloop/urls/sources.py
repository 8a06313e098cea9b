"""Where ``clickloop urls learn`` reads URLs from: the raw lake, or files.

Files: JSONL / NDJSON (a ``url`` field per record, e.g. simulator output), CSV (a
``url`` column), Parquet (a ``url`` column), ``.txt`` (one URL per line); gzip by
extension; a directory means the files in it (a simulator directory means its
``events/``); globs are expanded. Unreadable JSON lines are skipped and counted.

>>> for batch in file_batches(["data/sim"]):      # doctest: +SKIP
...     counts.add(batch)
"""

from __future__ import annotations

import glob
import gzip
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from clickloop.errors import InvalidInputError, UsageError

log = logging.getLogger(__name__)

SUFFIXES: Final = (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".txt")
BATCH: Final = 200_000


@dataclass
class ReadStats:
    files: int = 0
    rows: int = 0
    bad_lines: int = 0


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files named by paths, directories and globs (sorted; an empty match is an error)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            base = p / "events" if (p / "events").is_dir() else p
            found = sorted(f for f in base.rglob("*") if f.is_file() and _readable(f))
        elif any(c in item for c in "*?["):
            found = sorted(Path(f) for f in glob.glob(item, recursive=True) if _readable(Path(f)))
        elif p.is_file():
            found = [p]
        else:
            raise UsageError(f"no such file or directory: {item}")
        if not found:
            raise UsageError(
                f"no readable URL files in {item}", hint=f"expected files ending in {SUFFIXES}"
            )
        out.extend(found)
    return out


def _readable(p: Path) -> bool:
    name = p.name.lower().removesuffix(".gz")
    return name.endswith(SUFFIXES) and not p.name.startswith(".")


def file_batches(
    inputs: Sequence[str],
    *,
    column: str = "url",
    since: datetime | None = None,
    stats: ReadStats | None = None,
) -> Iterator[pa.Array]:
    """URL arrays from files, batch by batch (``since`` filters on a ``ts`` field)."""
    stats = stats if stats is not None else ReadStats()
    for path in expand_inputs(inputs):
        stats.files += 1
        for table in _read(path, column, since is not None, stats):
            if since is not None and "ts" in table.column_names:
                table = table.filter(_at_or_after(table.column("ts"), since))
            arr = table.column(column).combine_chunks()
            stats.rows += len(arr)
            yield arr


def _read(path: Path, column: str, with_ts: bool, stats: ReadStats) -> Iterator[pa.Table]:
    name = path.name.lower().removesuffix(".gz")
    where = str(path)
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        cols = [c for c in (column, "ts" if with_ts else None) if c and c in pf.schema_arrow.names]
        if column not in cols:
            raise InvalidInputError(f"{where} has no column {column!r}")
        for batch in pf.iter_batches(batch_size=BATCH, columns=cols):
            yield pa.Table.from_batches([batch])
    elif name.endswith(".csv"):
        import pyarrow.csv as pcsv

        include = [column] + (["ts"] if with_ts else [])
        opts = pcsv.ConvertOptions(
            include_columns=include,
            include_missing_columns=True,
            column_types=dict.fromkeys(include, pa.string()),
        )
        reader = pcsv.open_csv(where, convert_options=opts)
        for batch in reader:
            yield pa.Table.from_batches([batch])
    elif name.endswith(".txt"):
        yield from _lines(path, column)
    else:
        yield from _jsonl(path, column, with_ts, stats)


def _open(path: Path) -> Any:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _lines(path: Path, column: str) -> Iterator[pa.Table]:
    buf: list[str] = []
    with _open(path) as f:
        for raw in f:
            line = raw.decode("utf-8", errors="replace").strip()
            if line:
                buf.append(line)
            if len(buf) >= BATCH:
                yield pa.table({column: pa.array(buf, pa.string())})
                buf = []
    if buf:
        yield pa.table({column: pa.array(buf, pa.string())})


def _jsonl(path: Path, column: str, with_ts: bool, stats: ReadStats) -> Iterator[pa.Table]:
    # orjson line by line: tolerant of broken lines and of any type in other fields
    urls: list[str | None] = []
    ts: list[str | None] = []
    with _open(path) as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError:
                stats.bad_lines += 1
                continue
            if not isinstance(rec, dict):
                stats.bad_lines += 1
                continue
            u = rec.get(column)
            urls.append(u if isinstance(u, str) else None)
            if with_ts:
                t = rec.get("ts")
                ts.append(None if t is None else str(t))
            if len(urls) >= BATCH:
                yield _table(column, urls, ts, with_ts)
                urls, ts = [], []
    if urls:
        yield _table(column, urls, ts, with_ts)


def _table(column: str, urls: list[str | None], ts: list[str | None], with_ts: bool) -> pa.Table:
    cols = {column: pa.array(urls, pa.string())}
    if with_ts:
        cols["ts"] = pa.array(ts, pa.string())
    return pa.table(cols)


def _at_or_after(ts: pa.ChunkedArray, since: datetime) -> pa.Array:
    from clickloop.events.timestamps import parse_timestamps

    parsed = parse_timestamps(ts)
    return pc.fill_null(
        pc.greater_equal(parsed.values, pa.scalar(since, parsed.values.type)), False
    )


def lake_available() -> bool:
    """True when the raw lake package is installed (it is, in a full install)."""
    try:
        from clickloop.lake import open_lake  # noqa: F401
    except ImportError:  # pragma: no cover
        return False
    return True


def lake_batches(
    project: Any,
    *,
    column: str = "url",
    since: datetime | None = None,
    until: datetime | None = None,
    stats: ReadStats | None = None,
) -> Iterator[pa.Array]:
    """URL arrays from the project's raw lake, events with ``since <= ts < until``."""
    from clickloop.lake import open_lake

    stats = stats if stats is not None else ReadStats()
    lake = open_lake(project)
    try:
        dataset = lake.events(since, until, columns=[column])
        if column not in dataset.schema.names:
            raise InvalidInputError(f"the lake's events have no column {column!r}")
        for batch in dataset.to_batches(columns=[column], batch_size=BATCH):
            arr = batch.column(0)
            stats.rows += len(arr)
            yield arr
    finally:
        lake.close()


def learn_from(
    project: Any,
    batches: Iterable[pa.Array],
    *,
    source: str = "the raw lake",
    limit: int | None = None,
    min_template_urls: int = 5,
    advance: Callable[[int], None] | None = None,
    hint: str = "ingest events first (`clickloop ingest batch …`)",
) -> tuple[Any, Any, Any]:
    """Learn the URL knowledge from URL ``batches`` and merge it with the knowledge file
    (your edits kept); nothing is saved. Returns ``(learned, UrlCounts, previous)``.

    >>> kb, counts, previous = learn_from(project, lake_batches(project))   # doctest: +SKIP
    """
    from clickloop.urls.kbfile import KnowledgeFile
    from clickloop.urls.knowledge import from_config, knowledge_path
    from clickloop.urls.learn import LearnOptions, UrlCounts, learn

    cfg = project.config.urls
    previous = KnowledgeFile.load(knowledge_path(project))
    where = str(project.config_path) if project.config_path else "configuration"
    declared = from_config(cfg, previous, where=where).declared  # also validates them
    counts = UrlCounts(limit=limit or cfg.learn.sample)
    for batch in batches:
        added = counts.add(batch)
        if advance is not None:
            advance(added)
        if counts.full:
            break
    if counts.rows == 0:
        raise UsageError(f"no URLs found in {source}", hint=hint)
    options = LearnOptions(
        min_urls_per_host=cfg.learn.min_urls_per_host,
        max_category_values=cfg.learn.max_category_values,
        min_template_urls=min_template_urls,
        tracking_params=cfg.tracking_params,
    )
    kb = learn(counts, options=options, previous=previous, declared=declared)
    return kb, counts, previous


def learn_lake(
    project: Any,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    min_template_urls: int = 5,
) -> tuple[Any, Any]:
    """Learn the URL knowledge from the project's raw lake and save it, as
    ``clickloop urls learn`` does. Returns ``(KnowledgeFile, UrlCounts)``.

    >>> kb, counts = learn_lake(project)                               # doctest: +SKIP
    """
    from clickloop.urls.knowledge import knowledge_path

    batches = lake_batches(project, since=since, until=until)
    kb, counts, _ = learn_from(project, batches, min_template_urls=min_template_urls)
    kb.save(knowledge_path(project))
    return kb, counts
