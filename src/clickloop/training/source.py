"""Where training reads events from: the raw lake, or a table handed in by the caller.

>>> con = duckdb.connect()                                        # doctest: +SKIP
>>> rel = events_relation(project, con, start, end)               # the lake's events
>>> rel = events_relation(project, con, start, end, events=table) # an Arrow table instead
"""

from __future__ import annotations

import importlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow as pa
import pyarrow.dataset as ds

from clickloop.errors import NotFoundError

if TYPE_CHECKING:
    import duckdb

    from clickloop.project import Project

log = logging.getLogger(__name__)

Events: TypeAlias = pa.Table | ds.Dataset


def events_relation(
    project: Project,
    con: duckdb.DuckDBPyConnection,
    start: datetime | None,
    end: datetime | None,
    *,
    events: Events | None = None,
) -> duckdb.DuckDBPyRelation:
    """Canonical events with ``start <= ts < end`` (either bound may be open)."""
    if events is None:
        try:
            open_lake = importlib.import_module("clickloop.lake").open_lake
        except (ImportError, AttributeError) as exc:  # a build without the lake stage
            raise NotFoundError(
                "training reads events from the raw lake, which this build does not have",
                hint="pass events=… to clickloop.training.train, or ingest into the lake first",
            ) from exc
        lake: Any = open_lake(project)
        rel = lake.events_relation(con, start, end)
    else:
        name = f"cl_events_{id(events):x}"
        con.register(name, events)
        rel = con.table(name)
        conds = []
        if start is not None:
            conds.append(f"ts >= TIMESTAMPTZ '{start.isoformat()}'")
        if end is not None:
            conds.append(f"ts < TIMESTAMPTZ '{end.isoformat()}'")
        if conds:
            rel = rel.filter(" AND ".join(conds))
    return rel
