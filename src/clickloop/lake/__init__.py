"""The raw lake: append-only Parquet by event date, quarantine, exactly-once commits.

>>> from clickloop.lake import open_lake
>>> lake = open_lake(project)                                 # doctest: +SKIP
>>> lake.events("2026-11-01", "2026-11-08").to_table().num_rows
>>> lake.events_relation(duckdb.connect()).aggregate("count(*)").fetchone()
>>> lake.append_events(events, source="sim")                  # canonical events, deduped
>>> lake.stats()["total"]                                     # the accounting
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
