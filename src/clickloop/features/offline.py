"""The offline feature store: snapshots of feature values as Parquet in the lake.

Layout (one directory per feature set and definition version, so a changed
definition never mixes with old values)::

    <lake>/features/<set>/version=<v>/_definition.json
    <lake>/features/<set>/version=<v>/dt=YYYY-MM-DD/<as_of>-p<part>.parquet

Each file holds, for one snapshot time ``_as_of``, one row per entity with
history: ``entity``, ``_as_of`` and the features — the values a point-in-time
lookup at ``_as_of`` returns (events strictly before it). Files appear only
when fully written (written aside, then renamed). Query them with DuckDB::

    SELECT * FROM read_parquet('<lake>/features/user_activity/version=*/dt=*/*.parquet',
                               hive_partitioning = true)
    WHERE entity = 'u0000042' ORDER BY _as_of

>>> latest_snapshot(project, fs)                      # doctest: +SKIP
datetime.datetime(2026, 11, 8, 0, 0, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import fsspec
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from clickloop.errors import NotFoundError
from clickloop.features.definition import FeatureSet
from clickloop.features.source import lake_root

if TYPE_CHECKING:
    from clickloop.project import Project

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{8}T\d{6}\d{6}Z)-p(\d+)\.parquet$")
AS_OF = "_as_of"
ENTITY = "entity"


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _unstamp(s: str) -> datetime:
    return datetime.strptime(s, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)


def set_root(project: Project, fs: FeatureSet) -> str:
    """Directory (or URL) of a feature set's current version."""
    return f"{lake_root(project)}/features/{fs.name}/version={fs.version}"


def _fs(root: str) -> tuple[Any, str]:
    filesystem, path = fsspec.core.url_to_fs(root)
    return filesystem, path


def write_definition(project: Project, fs: FeatureSet) -> None:
    """Record what a version means, beside its data (for people and tools reading the lake)."""
    filesystem, path = _fs(set_root(project, fs))
    filesystem.makedirs(path, exist_ok=True)
    doc = {
        "feature_set": fs.name,
        "version": fs.version,
        "definition": fs.source,
        "features": [
            {"name": f.name, "op": f.op, "column": f.column, "window": f.window_label,
             "type": str(f.dtype)}
            for f in fs.features
        ],
    }  # fmt: skip
    with filesystem.open(f"{path}/_definition.json", "wb") as fh:
        fh.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def write_snapshot(
    project: Project, fs: FeatureSet, as_of: datetime, table: pa.Table, *, part: int = 0
) -> str:
    """Write one snapshot part atomically; return its path."""
    filesystem, path = _fs(set_root(project, fs))
    day = f"{path}/dt={as_of.astimezone(UTC).date().isoformat()}"
    filesystem.makedirs(day, exist_ok=True)
    final = f"{day}/{_stamp(as_of)}-p{part:04d}.parquet"
    tmp = f"{day}/.tmp-{uuid.uuid4().hex}.parquet"
    pq.write_table(table, tmp, filesystem=filesystem, compression="zstd")
    filesystem.mv(tmp, final)
    return final


def clear_snapshot(project: Project, fs: FeatureSet, as_of: datetime) -> int:
    """Delete every part of one snapshot (before it is rewritten); return files removed."""
    filesystem, path = _fs(set_root(project, fs))
    day = f"{path}/dt={as_of.astimezone(UTC).date().isoformat()}"
    if not filesystem.exists(day):
        return 0
    prefix = _stamp(as_of) + "-p"
    gone = [p for p in filesystem.ls(day, detail=False) if p.rsplit("/", 1)[-1].startswith(prefix)]
    for p in gone:
        filesystem.rm(p)
    return len(gone)


def snapshot_files(project: Project, fs: FeatureSet) -> dict[datetime, list[str]]:
    """Snapshot time → its Parquet parts, for the set's current version."""
    filesystem, path = _fs(set_root(project, fs))
    out: dict[datetime, list[str]] = {}
    if not filesystem.exists(path):
        return out
    for day in filesystem.ls(path, detail=False):
        if not day.rsplit("/", 1)[-1].startswith("dt="):
            continue
        for f in filesystem.ls(day, detail=False):
            m = _FILE.match(f.rsplit("/", 1)[-1])
            if m:
                out.setdefault(_unstamp(m[1]), []).append(f)
    return dict(sorted(out.items()))


def latest_snapshot(project: Project, fs: FeatureSet, as_of: datetime | None = None
                    ) -> datetime | None:  # fmt: skip
    """The newest snapshot time (at or before ``as_of``), or None."""
    times = [t for t in snapshot_files(project, fs) if as_of is None or t <= as_of]
    return times[-1] if times else None


def read_snapshot(project: Project, fs: FeatureSet, as_of: datetime | None = None) -> pa.Table:
    """The rows of the newest snapshot at or before ``as_of`` (all parts)."""
    files = snapshot_files(project, fs)
    t = latest_snapshot(project, fs, as_of)
    if t is None:
        raise NotFoundError(
            f"feature set {fs.name!r} (version {fs.version}) has no offline snapshot"
            + (f" at or before {as_of.isoformat()}" if as_of else ""),
            hint=f"run `clickloop features backfill {fs.name} --start … --end …`",
        )
    filesystem, _ = _fs(set_root(project, fs))
    tables = [pq.read_table(p, filesystem=filesystem) for p in files[t]]
    return pa.concat_tables(tables) if tables else pa.table({})


def glob(project: Project, fs: FeatureSet) -> str:
    """A ``read_parquet`` glob over every snapshot of the set's current version."""
    return f"{set_root(project, fs)}/dt=*/*.parquet"
