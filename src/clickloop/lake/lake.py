"""The raw lake: immutable events in Parquet by event date, quarantine beside them.

Layout under the lake root (a local directory or any fsspec URL)::

    raw/events/dt=YYYY-MM-DD/part-<writer>-<n>.parquet   events (EVENT_SCHEMA), by event date
    quarantine/dt=YYYY-MM-DD/part-<writer>-<n>.parquet   refused records, by arrival date
    _index/events/dt=…/part-….ids                        dedupe sidecars (ids + event times)
    _log/000…042.json                                    commit 42 (see clickloop.lake.log)

Readers see only committed files, through the log; a file never changes once
written. Reading is lazy: :meth:`Lake.events` returns a pyarrow dataset over
the files whose time range overlaps the request, filtered to the exact range,
and :meth:`Lake.events_relation` the same as a DuckDB relation.

>>> lake = open_lake(project)                                 # doctest: +SKIP
>>> ds = lake.events("2026-11-01", "2026-11-02", columns=["user_id", "url"]) # doctest: +SKIP
>>> for batch in ds.to_batches():      # streamed, never all in memory  # doctest: +SKIP
...     ...
>>> rel = lake.events_relation(duckdb.connect(), start="2026-11-01") # doctest: +SKIP
>>> rel.aggregate("type, count(*)").fetchall()                # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as ds

from clickloop.errors import UsageError
from clickloop.events.schema import EVENT_SCHEMA, UTC_US
from clickloop.lake.log import CommitLog, FileEntry, LakeState, SourceCounts
from clickloop.lake.quarantine import QUARANTINE_SCHEMA
from clickloop.lake.storage import Storage
from clickloop.lake.writer import CommitResult, LakeWriter

if TYPE_CHECKING:
    import duckdb

    from clickloop.project import Project

log = logging.getLogger(__name__)

TimeLike = datetime | date | str | None


class Lake:
    """A lake at one root (see the module doc). Thread-safe for readers; writers use
    :meth:`writer` (one per thread)."""

    def __init__(
        self,
        storage: Storage,
        *,
        compression: str = "zstd",
        target_file_rows: int = 1_000_000,
        dedupe_horizon: timedelta = timedelta(days=7),
    ) -> None:
        self.storage = storage
        self.compression = compression
        self.target_file_rows = target_file_rows
        self.dedupe_horizon = dedupe_horizon
        self.log = CommitLog(storage)
        self.arrow_fs = storage.arrow_filesystem()
        self._writer: LakeWriter | None = None

    @classmethod
    def open(
        cls,
        location: str,
        *,
        storage_options: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Lake:
        """A lake at ``location`` (a local directory or an fsspec URL)."""
        return cls(Storage.open(location, storage_options), **kw)

    @property
    def url(self) -> str:
        return self.storage.url

    def refresh(self) -> LakeState:
        """The state at the newest committed version."""
        return self.log.refresh()

    # -- reading -------------------------------------------------------------------------

    def files(
        self, kind: str = "events", start: TimeLike = None, end: TimeLike = None
    ) -> list[FileEntry]:
        """Committed files of ``kind`` whose time range overlaps ``[start, end)``."""
        lo, hi = to_micros(start), to_micros(end)
        state = self.refresh()
        out = [
            e
            for e in state.files.values()
            if e.kind == kind and (lo is None or e.ts_max >= lo) and (hi is None or e.ts_min < hi)
        ]
        out.sort(key=lambda e: (e.dt, e.ts_min, e.path))
        return out

    def events(
        self,
        start: TimeLike = None,
        end: TimeLike = None,
        columns: Sequence[str] | None = None,
    ) -> ds.Dataset:
        """Events with ``start <= ts < end`` as a lazy :class:`pyarrow.dataset.Dataset`.

        Nothing is read until the dataset is scanned (``to_batches()``,
        ``to_table()``, ``scanner(...)``, DuckDB). ``columns`` narrows the
        dataset's schema; when a range is given ``ts`` stays in it, because
        the range filter is applied on it as the data is scanned.
        """
        return self._dataset("events", EVENT_SCHEMA, "ts", start, end, columns)

    def quarantine(
        self, start: TimeLike = None, end: TimeLike = None, columns: Sequence[str] | None = None
    ) -> ds.Dataset:
        """Quarantined records that arrived in ``[start, end)`` (QUARANTINE_SCHEMA)."""
        return self._dataset("quarantine", QUARANTINE_SCHEMA, "received_at", start, end, columns)

    def _dataset(
        self,
        kind: str,
        schema: pa.Schema,
        time_column: str,
        start: TimeLike,
        end: TimeLike,
        columns: Sequence[str] | None,
    ) -> ds.Dataset:
        lo, hi = to_micros(start), to_micros(end)
        if columns is not None:
            unknown = [c for c in columns if c not in schema.names]
            if unknown:
                raise UsageError(
                    f"unknown {kind} column(s) {unknown}",
                    hint=f"columns are: {', '.join(schema.names)}",
                )
            wanted = list(columns)
            if (lo is not None or hi is not None) and time_column not in wanted:
                wanted.append(time_column)
            schema = pa.schema([schema.field(c) for c in wanted], metadata=schema.metadata)
        files = self.files(kind, start, end)
        if not files:
            return ds.dataset(schema.empty_table())
        dataset = ds.FileSystemDataset.from_paths(
            [self.storage.path(e.path) for e in files],
            schema=schema,
            format=ds.ParquetFileFormat(),
            filesystem=self.arrow_fs,
        )
        expr = None
        if lo is not None:
            expr = ds.field(time_column) >= pa.scalar(lo, UTC_US)
        if hi is not None:
            upper = ds.field(time_column) < pa.scalar(hi, UTC_US)
            expr = upper if expr is None else expr & upper
        return dataset.filter(expr) if expr is not None else dataset

    def events_relation(
        self,
        con: duckdb.DuckDBPyConnection,
        start: TimeLike = None,
        end: TimeLike = None,
        columns: Sequence[str] | None = None,
    ) -> duckdb.DuckDBPyRelation:
        """Events with ``start <= ts < end`` as a lazy DuckDB relation on ``con``.

        On a local lake DuckDB reads the Parquet files itself (parallel, with
        projection and filter pushdown); elsewhere it scans :meth:`events`.
        """
        lo, hi = to_micros(start), to_micros(end)
        files = self.files("events", start, end)
        if not files:
            rel = con.from_arrow(EVENT_SCHEMA.empty_table())
        elif self.storage.local:
            rel = con.read_parquet([self.storage.path(e.path) for e in files])
        else:
            rel = con.from_arrow(self.events(start, end))
        conditions = []
        if lo is not None:
            conditions.append(f"ts >= TIMESTAMPTZ '{_sql_time(lo)}'")
        if hi is not None:
            conditions.append(f"ts < TIMESTAMPTZ '{_sql_time(hi)}'")
        if conditions:
            rel = rel.filter(" AND ".join(conditions))
        if columns is not None:
            unknown = [c for c in columns if c not in EVENT_SCHEMA.names]
            if unknown:
                raise UsageError(f"unknown event column(s) {unknown}")
            rel = rel.project(", ".join(f'"{c}"' for c in columns))
        return rel

    # -- writing -------------------------------------------------------------------------

    def writer(self, **kw: Any) -> LakeWriter:
        """A new writing handle (one per process or thread that writes)."""
        kw.setdefault("horizon", self.dedupe_horizon)
        return LakeWriter(self, **kw)

    def append_events(self, table: pa.Table, *, source: str = "append") -> CommitResult:
        """Commit canonical events (``EVENT_SCHEMA`` columns), dropping ``event_id``
        duplicates within the dedupe horizon; one commit, all or nothing.

        For raw records (any columns, any types), use
        :func:`clickloop.ingest.ingest_table`, which maps, validates and quarantines.

        >>> lake.append_events(events, source="sim").counts["sim"].accepted  # doctest: +SKIP
        """
        missing = [c for c in ("event_id", "ts", "type", "user_id") if c not in table.column_names]
        if missing:
            raise UsageError(
                f"append_events needs canonical events; missing column(s) {missing}",
                hint="map and validate raw records with clickloop.ingest.ingest_table",
            )
        table = _canonical(table)
        if self._writer is None:
            self._writer = self.writer()
        with self._writer.begin(source, "append") as txn:
            txn.add_events(table)
            return txn.commit()

    # -- maintenance and accounting ------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Partitions, rows, bytes, newest event and arrival times, and the accounting."""
        from clickloop.lake.maintenance import stats

        return stats(self)

    def compact(self, **kw: Any) -> dict[str, Any]:
        """Merge small files (same content); see :func:`clickloop.lake.maintenance.compact`."""
        from clickloop.lake.maintenance import compact

        return compact(self, **kw)

    def vacuum(self, **kw: Any) -> dict[str, Any]:
        """Delete files no commit needs any more; see :func:`clickloop.lake.maintenance.vacuum`."""
        from clickloop.lake.maintenance import vacuum

        return vacuum(self, **kw)

    def totals(self) -> dict[str, SourceCounts]:
        """The accounting per source, as of the newest version."""
        return dict(self.refresh().sources)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"


def open_lake(project: Project) -> Lake:
    """The lake the project configures (``lake:`` in clickloop.yaml).

    >>> lake = open_lake(Project.load("shop"))                 # doctest: +SKIP
    """
    from clickloop.config.base import reveal
    from clickloop.config.infra import FsspecLakeConfig

    cfg = project.config.lake
    horizon = project.config.ingest.dedupe_horizon
    if isinstance(cfg, FsspecLakeConfig):
        return Lake.open(
            cfg.root,
            storage_options=reveal(cfg.storage_options),
            compression=cfg.compression,
            target_file_rows=cfg.target_file_rows,
            dedupe_horizon=horizon,
        )
    path = project.resolve_path(cfg.path) if cfg.path else project.state_path("lake")
    return Lake.open(
        str(path),
        compression=cfg.compression,
        target_file_rows=cfg.target_file_rows,
        dedupe_horizon=horizon,
    )


def to_micros(value: TimeLike | int) -> int | None:
    """UTC microseconds of a time bound (naive datetimes and dates are UTC)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UsageError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(
                f"not a time: {value!r}", hint="use ISO-8601, e.g. 2026-11-01 or 2026-11-01T08:00Z"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, date):
        return (value - date(1970, 1, 1)).days * 86_400_000_000
    raise UsageError(f"not a time: {value!r}")


def _sql_time(us: int) -> str:
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f") + "+00"


def _canonical(table: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    n = table.num_rows
    cols: dict[str, Any] = {}
    for f in EVENT_SCHEMA:
        cols[f.name] = table.column(f.name) if f.name in table.column_names else pa.nulls(n, f.type)
    try:
        nullable = pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA])
        out = pa.table(cols).cast(nullable)
        now = pa.scalar(datetime.now(UTC), UTC_US)
        received = pc.fill_null(out.column("received_at"), now)
        out = out.set_column(2, nullable.field("received_at"), received)
        nulls = [c for c in ("event_id", "ts", "type", "user_id") if out.column(c).null_count]
        if nulls:
            raise UsageError(
                f"append_events: required column(s) {nulls} hold nulls",
                hint="map and validate raw records with clickloop.ingest.ingest_table",
            )
        return out.cast(EVENT_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise UsageError(
            f"append_events: the table does not fit the event schema: {exc}",
            hint="map and validate raw records with clickloop.ingest.ingest_table",
        ) from exc
