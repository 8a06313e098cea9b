"""Batch import: files (CSV, JSONL, Parquet; gzip; local or object storage) into the lake.

Each file is read in blocks; worker threads parse and validate blocks in
parallel (pyarrow releases the GIL), and the main thread, in file order,
deduplicates and stages the results into a lake transaction that is committed
every ``commit_every`` records and at the end. Each commit also records, per
file fingerprint, how far the import got — in the same atomic commit as the
data — so:

* re-running over the same files adds nothing (finished fingerprints are skipped);
* an interrupted run (crash, kill -9, Ctrl-C) continues where its last commit
  stopped, and what it had staged after that is invisible and cleaned up;
* two imports of the same file at once cannot both commit it (the second one's
  commit conflicts and it stops with an error).

>>> report = import_files(project, ["data/*.jsonl.gz"])     # doctest: +SKIP
>>> report.counts.accepted, report.counts.quarantined         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from clickloop.errors import ConflictError, NotFoundError, UsageError
from clickloop.events.mapping import Mapping
from clickloop.events.schema import Reason
from clickloop.ingest.crash import CrashHook
from clickloop.ingest.files import Block, InputFile, discover, read_blocks
from clickloop.ingest.metrics import IngestMetrics
from clickloop.ingest.process import Outcome, merge_outcomes, process_lines, process_table
from clickloop.lake.log import SourceCounts
from clickloop.lake.quarantine import rejects_table

if TYPE_CHECKING:
    from clickloop.config.infra import CsvOptions, FilesSourceConfig
    from clickloop.lake.lake import Lake
    from clickloop.project import Project

log = logging.getLogger(__name__)

DEFAULT_SOURCE = "files"


@dataclass
class ImportReport:
    """What one run did: per file, and in total (``counts`` reconcile exactly)."""

    source: str
    files: list[dict[str, Any]] = field(default_factory=list)
    counts: SourceCounts = field(default_factory=SourceCounts)
    commits: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.counts.received / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "files": self.files,
            **self.counts.to_json(),
            "quarantined_total": self.counts.quarantined_total,
            "balanced": self.counts.balanced,
            "commits": self.commits,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.rate),
        }


class BatchImport:
    """Import files into ``lake`` through ``mapping``, counting under ``source``."""

    def __init__(
        self,
        lake: Lake,
        *,
        mapping: Mapping | None = None,
        source: str = DEFAULT_SOURCE,
        csv: CsvOptions | None = None,
        max_future: timedelta = timedelta(hours=1),
        workers: int | None = None,
        commit_every: int = 1_000_000,
        progress: Callable[[int], None] | None = None,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.lake = lake
        self.mapping = mapping or Mapping()
        self.source = source
        self.csv = csv
        self.max_future = max_future
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.commit_every = commit_every
        self.progress = progress or (lambda n: None)
        self.metrics = metrics or IngestMetrics()
        self._crash = CrashHook()

    def pending(self, files: list[InputFile]) -> tuple[list[tuple[InputFile, dict[str, Any]]], int]:
        """Files still to import with where to start, and the records still ahead
        (estimated from sizes for files not started)."""
        state = self.lake.refresh()
        out = []
        for f in files:
            cp = state.checkpoints.get(f.key)
            if not (cp and cp.get("done")):
                out.append((f, dict(cp) if cp else {}))
        return out, sum(f.size for f, _ in out)

    def run(self, files: list[InputFile]) -> ImportReport:
        """Import ``files`` (see the module doc); return the report of this run."""
        started = time.perf_counter()
        report = ImportReport(self.source)
        todo, _ = self.pending(files)
        todo_keys = {f.key for f, _ in todo}
        per_file: dict[str, dict[str, Any]] = {}
        for f in files:
            status = "skipped: already imported" if f.key not in todo_keys else "imported"
            per_file[f.key] = {"file": f.url, "format": f.format, "compression": f.compression,
                               "records": 0, "status": status}  # fmt: skip
        expect: dict[str, Any] = {}
        base: dict[str, int] = {}
        lines: dict[str, int] = {}
        for f, cp in todo:
            expect[f.key] = cp or None
            base[f.key] = int(cp.get("records", 0)) if cp else 0
            lines[f.key] = int(cp.get("lines", 0)) if cp else 0
            if cp:
                per_file[f.key]["status"] = f"resumed at record {base[f.key]:,}"
        report.files = list(per_file.values())
        if not todo:
            report.seconds = time.perf_counter() - started
            return report

        with self.lake.writer() as writer, ThreadPoolExecutor(self.workers) as pool:
            txn = writer.begin(self.source, "ingest-batch")
            inflight: deque[tuple[Block, Future[Outcome]]] = deque()

            def consume() -> None:
                nonlocal txn
                block, future = inflight.popleft()
                outcome = future.result()
                key = block.file.key
                if block.data is not None:
                    first = lines[key]
                    lines[key] += outcome.lines
                    block.end["lines"] = lines[key]
                    if outcome.rejects.num_rows:
                        outcome.rejects = _number_lines(outcome.rejects, block.file.url, first)
                txn.add_events(outcome.events, outcome.hashes)
                txn.add_rejects(outcome.rejects)
                per_file[key]["records"] += outcome.records
                done = base[key] + per_file[key]["records"]
                value = {**block.end, "records": done, "done": block.last,
                         "path": block.file.url, "size": block.file.size}  # fmt: skip
                txn.checkpoint(key, value, expect=expect[key])
                self.progress(outcome.records)
                if txn.records >= self.commit_every:
                    txn = self._commit(txn, writer, expect, report)

            try:
                for f, cp in todo:
                    for block in read_blocks(f, cp, csv_options=self.csv):
                        inflight.append((block, pool.submit(self._process, block)))
                        while len(inflight) > self.workers:  # bounds memory
                            consume()
                while inflight:
                    consume()
                self._commit(txn, writer, expect, report)
            except ConflictError as exc:
                txn.abort()
                raise ConflictError(
                    f"another process is importing the same file(s) into {self.lake.url}",
                    hint="let it finish; a re-run afterwards adds nothing",
                    reasons=exc.details.get("reasons"),
                ) from exc
            except BaseException:
                txn.abort()
                raise
        report.seconds = time.perf_counter() - started
        return report

    def _commit(self, txn: Any, writer: Any, expect: dict[str, Any], report: ImportReport) -> Any:
        self._crash.at("batch-staged")
        result = txn.commit()
        self._crash.at("batch-committed")
        if result.version is not None:
            report.commits += 1
            for c in result.counts.values():
                report.counts.add(c)
            for key, value in txn.checkpoints.items():
                expect[key] = value
            self.metrics.observe_commit(result, "ingest-batch")
            log.debug("commit %s: %s", result.version, result.to_dict())
        return writer.begin(self.source, "ingest-batch")

    def _process(self, block: Block) -> Outcome:
        f = block.file
        now = datetime.now(UTC)
        if block.data is not None:
            # the block's first line number is known only once the blocks before it are
            # counted (in order, by consume): the origin is fixed up there
            return process_lines(
                block.data,
                self.mapping,
                source=self.source,
                origin=str,
                received_at=now,
                max_future=self.max_future,
            )
        outcomes = []
        if block.table is not None and block.table.num_rows:
            first = block.first_record
            outcomes.append(
                process_table(
                    block.table,
                    self.mapping,
                    source=self.source,
                    origin=lambda row: f"{f.url}#{first + row + 1}",
                    received_at=now,
                    max_future=self.max_future,
                    where=f.url,
                )
            )
        if block.invalid:
            outcomes.append(self._invalid_rows(block, now))
        return merge_outcomes(outcomes)

    def _invalid_rows(self, block: Block, now: datetime) -> Outcome:
        from clickloop.events.schema import EVENT_SCHEMA

        texts = [t for t, _ in block.invalid]
        origins = [f"{block.file.url}:{n}" if n > 0 else block.file.url for _, n in block.invalid]
        rejects = rejects_table(
            texts,
            [Reason.UNPARSEABLE.value] * len(texts),
            ["a CSV row whose number of cells does not match the header"] * len(texts),
            self.source,
            now,
            origins,
        )
        return Outcome(EVENT_SCHEMA.empty_table(), rejects, len(texts), np.zeros(0, np.uint64))


def _number_lines(rejects: pa.Table, url: str, first: int) -> pa.Table:
    """Origins of a JSONL block's rejects, from block-relative to file line numbers."""
    i = rejects.schema.get_field_index("origin")
    rel = rejects.column(i).to_pylist()
    origins = pa.array([f"{url}:{first + int(r) + 1}" for r in rel], pa.string())
    return rejects.set_column(i, rejects.schema.field(i), origins)


def import_files(
    project: Project,
    paths: list[str] | None = None,
    *,
    source: str | None = None,
    lake: Lake | None = None,
    progress: Callable[[int], None] | None = None,
    metrics: IngestMetrics | None = None,
    workers: int | None = None,
    commit_every: int = 1_000_000,
) -> ImportReport:
    """Import ``paths`` (or the configured files source's ``path``) into the project's lake.

    >>> import_files(project, ["exports/2026-11-*.csv.gz"], source="partner")  # doctest: +SKIP
    """
    from clickloop.lake.lake import open_lake

    cfg = files_source(project, source)
    name = source or DEFAULT_SOURCE
    if not paths:
        if cfg is None:
            raise UsageError(
                "nothing to import: give PATH… or --source NAME of a configured files source"
            )
        paths = [cfg.path] if isinstance(cfg.path, str) else list(cfg.path)
        paths = [project.resolve(p) for p in paths]
    from clickloop.config.base import reveal

    files = discover(
        paths,
        fmt=cfg.format if cfg else "auto",
        compression=cfg.compression if cfg else "auto",
        storage_options=reveal(cfg.storage_options) if cfg else None,
    )
    own = lake is None
    lake = lake or open_lake(project)
    try:
        job = BatchImport(
            lake,
            mapping=cfg,
            source=name,
            csv=cfg.csv if cfg else None,
            max_future=project.config.ingest.max_future,
            workers=workers,
            commit_every=commit_every,
            progress=progress,
            metrics=metrics,
        )
        return job.run(files)
    finally:
        if own:
            lake.close()


def files_source(project: Project, name: str | None) -> FilesSourceConfig | None:
    """The configured ``files`` source ``name`` (``None`` for the canonical mapping)."""
    from clickloop.config.infra import FilesSourceConfig

    if name is None:
        return None
    sources = project.config.sources
    cfg = sources.get(name)
    if cfg is None:
        known = [n for n, s in sources.items() if isinstance(s, FilesSourceConfig)]
        raise NotFoundError(
            f"no source named {name!r} in the configuration",
            hint=f"files sources: {', '.join(known) or 'none (add one under sources:)'}",
        )
    if not isinstance(cfg, FilesSourceConfig):
        raise UsageError(f"source {name!r} is a {cfg.type} source, not a files source")
    return cfg


def ingest_table(
    lake: Lake,
    table: pa.Table,
    *,
    source: str = "append",
    mapping: Mapping | None = None,
    received_at: datetime | None = None,
    max_future: timedelta = timedelta(hours=1),
) -> SourceCounts:
    """Map, validate, quarantine and deduplicate raw records (any columns) in one commit.

    >>> ingest_table(lake, pa.table({"id": ["e1"], ...}), mapping=m).accepted  # doctest: +SKIP
    """
    outcome = process_table(
        table,
        mapping or Mapping(),
        source=source,
        origin=lambda row: f"row {row + 1}",
        received_at=received_at,
        max_future=max_future,
    )
    with lake.writer() as writer, writer.begin(source, "append") as txn:
        txn.add_events(outcome.events, outcome.hashes)
        txn.add_rejects(outcome.rejects)
        result = txn.commit()
    return result.counts.get(source, SourceCounts())


__all__ = ["BatchImport", "ImportReport", "import_files", "ingest_table"]
