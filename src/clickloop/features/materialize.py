"""Materialisation: the newest offline snapshot of each feature set into the online store.

Rows go in with ``_event_ts`` = the snapshot time, so the store's event-time
rule keeps whichever is newer per entity — a value the stream wrote after the
snapshot is never overwritten by it, and running materialisation twice is
harmless. With ``compute=True`` a fresh snapshot as of ``as_of`` (default: now)
is computed from the lake first.

>>> materialize(project, ["user_activity"], compute=True)           # doctest: +SKIP
[{'feature_set': 'user_activity', 'as_of': '…', 'rows': 98213, 'seconds': 1.4}]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from clickloop.features import offline
from clickloop.features.batch import SetRef, backfill, compile_sets
from clickloop.features.metrics import ONLINE_ROWS
from clickloop.features.source import Knowledge, load_knowledge

if TYPE_CHECKING:
    from clickloop.project import Project
    from clickloop.stores.base import OnlineStore

log = logging.getLogger(__name__)


def materialize(
    project: Project,
    feature_sets: Sequence[SetRef] | None = None,
    *,
    as_of: datetime | None = None,
    compute: bool = False,
    store: OnlineStore | None = None,
    knowledge: Knowledge | None = None,
) -> list[dict[str, Any]]:
    """Load the newest snapshot (at or before ``as_of``) of each set into the online store."""
    knowledge = knowledge if knowledge is not None else load_knowledge(project)
    sets = compile_sets(project, feature_sets, knowledge)
    if compute:
        when = as_of or datetime.now(UTC)
        every = timedelta(microseconds=1)
        backfill(project, sets, start=when - every, end=when, every=every, knowledge=knowledge)
    own = store is None
    if store is None:
        from clickloop.stores.base import open_online_store

        store = open_online_store(project)
    out = []
    try:
        for fs in sets:
            t0 = time.perf_counter()
            table = offline.read_snapshot(project, fs, as_of)
            taken = offline.latest_snapshot(project, fs, as_of)
            rows = _online_rows(table)
            written = store.write(fs.name, rows, ttl=fs.ttl) if rows.num_rows else 0
            ONLINE_ROWS.labels(fs.name, "materialize").inc(rows.num_rows)
            seconds = time.perf_counter() - t0
            out.append({
                "feature_set": fs.name, "version": fs.version,
                "as_of": taken.isoformat() if taken else None, "rows": rows.num_rows,
                "applied": written, "seconds": round(seconds, 3),
                "rows_per_second": round(rows.num_rows / seconds) if seconds else None,
            })  # fmt: skip
            log.info("materialized %s: %d rows as of %s", fs.name, rows.num_rows, taken)
    finally:
        if own:
            store.close()
    return out


def _online_rows(snapshot: pa.Table) -> pa.Table:
    """Snapshot rows → online rows: ``entity``, ``_event_ts`` (= the snapshot time), features."""
    ts = snapshot.column(offline.AS_OF)
    rest = snapshot.drop_columns([offline.ENTITY, offline.AS_OF])
    cols = {"entity": snapshot.column(offline.ENTITY), "_event_ts": ts}
    for name in rest.column_names:
        cols[name] = rest.column(name)
    return pa.table(cols)
