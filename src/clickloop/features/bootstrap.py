"""Seed a feature stream's state from the raw lake before it consumes the bus.

A stream engine that starts empty sees only what is on the bus, but events
imported with ``clickloop ingest batch`` go straight to the lake, and a bus keeps
less history than a 30-day or lifetime window needs. So a stream without a
checkpoint first reads the lake (like Chronon's batch bootstrap of streaming
state). The semantics:

* **Snapshot.** One committed lake version is read, in event-date partitions,
  lazily (record batches; memory stays bounded by the state, not the lake). Files
  committed after that version are not read: events the stream ingester appends
  arrive on the bus anyway; a batch import made *during* the bootstrap is seen by
  the next batch backfill/materialisation (or ``--bootstrap lake``).
* **Range.** Per feature set, only events that can still count at the clock: the
  longest window plus its hop, or all history for a lifetime aggregation.
* **Clock.** The newest event time of the snapshot + 1 µs: the state then equals
  the batch engine's values as of that time (``as_of_values``, ``training_set``).
* **Counted once.** The ids of the lake events within ``ingest.dedupe_horizon`` of
  the clock (one day more, as the stream's dedupe compares neighbouring days) go
  into the stream's dedupe memory, so their copies on the bus are duplicates. A
  bus event older than ``clock - dedupe_horizon`` is left to the lake (counted as
  ``before_bootstrap``, not applied): nothing could tell whether the lake holds it.
* **Crash-safe.** Nothing is written while reading; the state, the dedupe memory
  and this report are saved in one checkpoint transaction at the end. A kill -9
  before it leaves no checkpoint, so the restart bootstraps again from scratch —
  the same state, nothing counted twice.

Afterwards the runner writes every seeded entity to the online store and consumes
the bus from the group's committed offsets (the oldest retained record for a new
group).

>>> report = bootstrap(stream, open_lake(project))                   # doctest: +SKIP
>>> report.events, report.start, report.end
(1200000, '2026-11-01T00:00:03+00:00', '2026-11-06T23:59:58+00:00')
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from clickloop.events.schema import EVENT_SCHEMA, UTC_US
from clickloop.features import metrics as m

if TYPE_CHECKING:
    from clickloop.features.stream import FeatureStream
    from clickloop.lake import Lake
    from clickloop.lake.log import FileEntry

log = logging.getLogger(__name__)

MODES: Final = ("auto", "lake", "none")
DAY: Final = 86_400_000_000
BATCH_ROWS: Final = 262_144  # rows per seed step: amortises the per-batch cost, bounds memory


def iso(us: int | None) -> str | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat()


@dataclass
class BootstrapReport:
    """What a bootstrap read and left in the state (kept in the checkpoint)."""

    lake_version: int | None = None
    files: int = 0
    partitions: int = 0
    events: int = 0  # lake events fed to the state
    remembered: int = 0  # of which ids went into the dedupe memory
    start: str | None = None  # oldest event time read
    end: str | None = None  # newest event time read
    clock: str | None = None  # the state's as-of time afterwards
    floor: str | None = None  # bus events older than this are left to the lake
    read_from: dict[str, str | None] = field(default_factory=dict)  # per set (None: all)
    seconds: float = 0.0
    rows_written: int = 0  # online rows the runner wrote afterwards

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_from(stream: FeatureStream, clock: int) -> dict[str, int | None]:
    """Per set, the oldest event time (µs) its values at ``clock`` depend on (None: all)."""
    out: dict[str, int | None] = {}
    for fs in stream.sets:
        span = fs.max_window
        out[fs.name] = None if span is None else clock - span
    return out


def bootstrap(
    stream: FeatureStream,
    lake: Lake,
    *,
    batch_rows: int = BATCH_ROWS,
    progress: Callable[[int], None] | None = None,
) -> BootstrapReport:
    """Seed an *empty* ``stream`` from ``lake`` (see the module docstring); return the report."""
    if stream.max_ts > -(2**61) or any(st.entities for st in stream.states.values()):
        raise ValueError("bootstrap needs an empty stream state")
    t0 = time.perf_counter()
    state = lake.refresh()  # the snapshot: files committed later are not read
    files = [e for e in state.files.values() if e.kind == "events"]
    report = BootstrapReport(lake_version=state.version)
    if not files:
        report.seconds = time.perf_counter() - t0
        log.info("bootstrap: the lake holds no events; the stream starts empty")
        return report
    clock = max(e.ts_max for e in files) + 1
    stream.advance(clock)
    floor = clock - stream.dedupe.horizon
    stream.floor = floor
    remember_from = floor - DAY
    froms = read_from(stream, clock)
    lo = None if any(v is None for v in froms.values()) else min(v for v in froms.values()
                                                                   if v is not None)  # fmt: skip
    wanted = [e for e in files if lo is None or e.ts_max >= lo]
    by_dt: dict[str, list[FileEntry]] = {}
    for e in sorted(wanted, key=lambda e: (e.dt, e.ts_min, e.path)):
        by_dt.setdefault(e.dt, []).append(e)
    report.files, report.partitions = len(wanted), len(by_dt)
    report.clock, report.floor = iso(clock), iso(floor)
    report.read_from = {k: iso(v) for k, v in froms.items()}
    lo_ts, hi_ts = None, None
    for dt, entries in by_dt.items():
        newest = max(e.ts_max for e in entries)
        sets = {name: f for name, f in froms.items() if f is None or newest >= f}
        dataset = ds.FileSystemDataset.from_paths(
            [lake.storage.path(e.path) for e in entries],
            schema=EVENT_SCHEMA,
            format=ds.ParquetFileFormat(),
            filesystem=lake.arrow_fs,
        )
        scan = dataset.scanner(
            filter=None if lo is None else ds.field("ts") >= pa.scalar(lo, UTC_US),
            batch_size=batch_rows,
        )
        pending: list[pa.RecordBatch] = []
        size = 0
        for batch in [*scan.to_batches(), None]:
            if batch is not None and batch.num_rows:
                pending.append(batch)
                size += batch.num_rows
            if pending and (batch is None or size >= batch_rows):
                table = pa.Table.from_batches(pending)
                pending, size = [], 0
                ts = table.column("ts")
                lo_b, hi_b = pc.min(ts).value, pc.max(ts).value
                lo_ts = lo_b if lo_ts is None else min(lo_ts, lo_b)
                hi_ts = hi_b if hi_ts is None else max(hi_ts, hi_b)
                stream.seed(table, sets=sets, remember_from=remember_from)
                report.events += table.num_rows
                m.BOOTSTRAP_EVENTS.inc(table.num_rows)
                if progress is not None:
                    progress(table.num_rows)
        log.debug("bootstrap: partition %s read (%d events so far)", dt, report.events)
    report.remembered = len(stream.dedupe)
    report.start, report.end = iso(lo_ts), iso(hi_ts)
    report.seconds = round(time.perf_counter() - t0, 3)
    log.info(
        "bootstrap: %d lake events (%s … %s) from version %s in %.1f s; clock %s",
        report.events, report.start, report.end, state.version, report.seconds, report.clock,
    )  # fmt: skip
    return report
