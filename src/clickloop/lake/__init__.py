"""The raw lake: append-only Parquet by event date, quarantine, exactly-once commits.

Canonical events in, deduplicated; reading is lazy (a pyarrow dataset or a DuckDB
relation); ``stats()`` holds the accounting of everything that came in.

>>> from clickloop.lake import open_lake
>>> lake = open_lake(project)                                 # doctest: +SKIP
>>> lake.events("2026-11-01", "2026-11-08").count_rows()      # doctest: +SKIP
>>> lake.events_relation(duckdb.connect()).aggregate("count(*)").fetchall()  # doctest: +SKIP
>>> lake.append_events(events, source="sim")                  # doctest: +SKIP
>>> lake.stats()["total"]                                     # doctest: +SKIP
"""

from clickloop.lake.lake import Lake, open_lake, to_micros
from clickloop.lake.log import Commit, FileEntry, LakeState, SourceCounts
from clickloop.lake.quarantine import QUARANTINE_SCHEMA, rejects_table
from clickloop.lake.storage import Storage
from clickloop.lake.writer import CommitResult, LakeWriter, Transaction

__all__ = [
    "QUARANTINE_SCHEMA",
    "Commit",
    "CommitResult",
    "FileEntry",
    "Lake",
    "LakeState",
    "LakeWriter",
    "SourceCounts",
    "Storage",
    "Transaction",
    "open_lake",
    "rejects_table",
    "to_micros",
]
