"""The online feature store: the latest feature vector per entity, read in one round trip.

Backends: SQLite in WAL mode (embedded default, :mod:`clickloop.stores.sqlite`) and
Redis (:mod:`clickloop.stores.redis`); one contract suite
(``tests/contract/test_online_store.py``) runs against both.

Semantics every backend guarantees:

* **Rows.** :meth:`OnlineStore.write` takes an Arrow table with the columns
  ``entity`` (string; integers are spelt as strings), ``_event_ts`` (timestamp:
  the event time the values reflect) and any number of features — bool,
  integer, float (NaN and ±inf kept), string, timestamp, date, duration, or
  lists / structs / string-keyed maps of bool, integer, float and string (top-k,
  histograms). Values read back with the same Python type they were written as.
* **Event-time order.** Per (feature set, entity) the store keeps the row with
  the latest ``_event_ts``; a row older than the stored one is ignored, one with
  an equal time replaces it. Replays and late materialisations never regress a
  value, and a write is idempotent, so a crashed write is simply run again.
* **TTL.** With ``ttl``, a row expires at ``_event_ts + ttl`` (event time, not
  write time: a value that reflects old events is already stale) and then reads
  as absent; an expired row no longer blocks older rows. Redis also expires the key.
* **Reads.** :meth:`OnlineStore.read` returns every feature of one entity across
  several feature sets in one round trip (SQLite: one query; Redis: one MGET);
  absent or expired feature sets contribute nothing. Feature names must be
  unique across the sets read together (name them ``<set>__<feature>``).
* **Schema changes.** Each row records the schema it was written with; adding
  or removing features needs no migration, and rows written before a change
  read back with the features they had.
* **Threads.** A store object may be shared by threads: SQLite opens one
  connection per thread, Redis uses redis-py's thread-safe connection pool.
  Open stores after forking, not before.

>>> store = open_online_store(project)                       # doctest: +SKIP
>>> store.write("user_activity", rows, ttl=timedelta(days=7))
100000
>>> store.read("u42", ["user_activity", "user_purchases"])
{'user_activity__page_view_count_1h': 3, ..., 'user_purchases__price_sum_7d': 12.5}
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import Counter, Histogram

from clickloop.errors import InvalidInputError, UsageError
from clickloop.stores.codec import RowCodec, record_sid

if TYPE_CHECKING:
    from clickloop.project import Project

ENTITY: Final = "entity"
EVENT_TS: Final = "_event_ts"
CHUNK_ROWS: Final = 25_000  # rows encoded and committed together: bounds memory and WAL size
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")

ROWS = Counter(
    "clickloop_online_store_rows",
    "Rows written to the online store: applied (newest for their entity) or stale (ignored)",
    ["backend", "feature_set", "outcome"],
)
WRITE_SECONDS = Histogram(
    "clickloop_online_store_write_seconds",
    "Time to write one batch of rows to the online store",
    ["backend"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@dataclass(frozen=True, slots=True)
class FeatureSetInfo:
    """What the store knows about one feature set (for operators: freshness, schema)."""

    name: str
    features: dict[str, str]  # name → Arrow type of the latest schema written
    last_write: datetime | None  # wall-clock time of the latest write
    max_event_ts: datetime | None  # latest event time written (freshness)
    ttl: timedelta | None  # TTL of the latest write
    rows_applied: int  # rows that became the stored value for their entity
    rows_stale: int  # rows ignored because a newer one was stored


def check_feature_set(name: str) -> str:
    """A feature-set name the store accepts (also safe in Redis keys and SQL)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError(
            f"invalid feature set name {name!r}",
            hint="use letters, digits, '_', '.', '-' (starting with a letter or '_'), "
            "at most 128 characters",
        )
    return name


def now_us() -> int:
    return time.time_ns() // 1000


def us_to_datetime(us: int | None) -> datetime | None:
    return None if us is None else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


@dataclass(slots=True)
class Prepared:
    """One chunk of validated input rows, ready for a backend."""

    entities: pa.Array  # string
    ts_us: np.ndarray  # int64 event times
    records: pa.Array  # large_binary: the encoded rows (stores.codec)


def check_entities(entities: Sequence[str]) -> None:
    if isinstance(entities, str | bytes):
        raise UsageError(
            f"entities must be a list of entity keys, not the string {entities!r}",
            hint=f"write [{entities!r}]",
        )


def _as_table(feature_set: str, rows: pa.Table | pa.RecordBatch) -> pa.Table:
    if isinstance(rows, pa.RecordBatch):
        rows = pa.Table.from_batches([rows])
    if not isinstance(rows, pa.Table):
        raise UsageError(
            f"rows for feature set {feature_set!r} must be a pyarrow Table or RecordBatch, "
            f"not {type(rows).__name__}"
        )
    for col in (ENTITY, EVENT_TS):
        if col not in rows.column_names:
            raise InvalidInputError(
                f"rows for feature set {feature_set!r} have no {col!r} column "
                f"(columns: {', '.join(rows.column_names) or 'none'})",
                hint=f"pass columns {ENTITY!r} (the entity key), {EVENT_TS!r} (event time) "
                "and the features",
            )
    return rows


def _entities(feature_set: str, col: pa.ChunkedArray) -> pa.ChunkedArray:
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.cast(t.value_type), t.value_type
    if pa.types.is_integer(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        col = col.cast(pa.string())
    elif not pa.types.is_string(t):
        raise InvalidInputError(
            f"column {ENTITY!r} of feature set {feature_set!r} has type {t}; "
            "expected string (or integer)"
        )
    _no_nulls(feature_set, ENTITY, col)
    return col


def _event_ts(feature_set: str, col: pa.ChunkedArray) -> np.ndarray:
    if not pa.types.is_timestamp(col.type):
        raise InvalidInputError(
            f"column {EVENT_TS!r} of feature set {feature_set!r} has type {col.type}; "
            "expected a timestamp",
            hint="cast it, e.g. pyarrow.compute.cast(col, pa.timestamp('us', 'UTC'))",
        )
    _no_nulls(feature_set, EVENT_TS, col)
    us = pc.cast(col, pa.timestamp("us", col.type.tz), safe=False).cast(pa.int64())
    return us.to_numpy()


def _no_nulls(feature_set: str, name: str, col: pa.ChunkedArray) -> None:
    if col.null_count:
        first = int(pc.index(col.is_null(), True).as_py())
        raise InvalidInputError(
            f"column {name!r} of feature set {feature_set!r} has {col.null_count} null "
            f"value(s) (first at row {first}); every row needs an entity and an event time",
            row=first,
        )


class OnlineStore(ABC):
    """Latest feature vector per (feature set, entity). See the module docstring.

    Subclasses implement the backend primitives; the public methods (input
    validation, encoding, chunking, metrics) live here, so every backend behaves
    the same.
    """

    backend: str = "?"

    def __init__(self) -> None:
        self._codecs: dict[tuple[str, int], RowCodec] = {}
        self._writer_codecs: dict[tuple[str, pa.Schema], RowCodec] = {}
        self._read_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self._closed = False

    # -- public API ------------------------------------------------------------------

    def write(
        self, feature_set: str, rows: pa.Table | pa.RecordBatch, *, ttl: timedelta | None = None
    ) -> int:
        """Upsert rows (columns ``entity``, ``_event_ts``, features); return rows applied.

        A row older than the stored one for its entity is ignored (not counted);
        an expired stored row is replaced by any row. Large tables are written in
        chunks of :data:`CHUNK_ROWS`, each atomic.

        >>> store.write("user_activity", pa.table({"entity": ["u1"],     # doctest: +SKIP
        ...     "_event_ts": pa.array([ts], pa.timestamp("us", "UTC")), "clicks_1d": [3]}))
        1
        """
        self._check_open()
        check_feature_set(feature_set)
        if ttl is not None and ttl <= timedelta(0):
            raise UsageError(f"ttl for feature set {feature_set!r} must be positive, not {ttl}")
        ttl_us = None if ttl is None else ttl // timedelta(microseconds=1)
        table = _as_table(feature_set, rows)
        if table.num_rows == 0:
            return 0
        started = time.perf_counter()
        entities = _entities(feature_set, table.column(ENTITY))
        ts_us = _event_ts(feature_set, table.column(EVENT_TS))
        features = table.drop_columns([ENTITY, EVENT_TS])
        codec = self._writer_codec(feature_set, features.schema)
        # every call, not once per process: someone may have wiped the store meanwhile
        self._register_schema(feature_set, codec)
        self._codecs[(feature_set, codec.sid)] = codec

        def prepare(start: int) -> Prepared:
            n = min(CHUNK_ROWS, table.num_rows - start)
            ts = ts_us[start : start + n]
            return Prepared(
                entities.slice(start, n).combine_chunks(),
                ts,
                codec.encode(features.slice(start, n), ts),
            )

        starts = range(0, table.num_rows, CHUNK_ROWS)
        if len(starts) == 1:
            applied = self._write_chunk(feature_set, prepare(0), ttl_us)
        else:
            # encode chunk k+1 while chunk k is written: encoding is mostly Arrow kernels,
            # which release the GIL, so it overlaps with the backend's work
            applied = 0
            with ThreadPoolExecutor(1, thread_name_prefix="online-encode") as pool:
                upcoming = pool.submit(prepare, starts[0])
                for i in range(len(starts)):
                    chunk = upcoming.result()
                    if i + 1 < len(starts):
                        upcoming = pool.submit(prepare, starts[i + 1])
                    applied += self._write_chunk(feature_set, chunk, ttl_us)
        stale = table.num_rows - applied
        self._record_write(feature_set, codec, int(ts_us.max()), ttl_us, applied, stale)
        ROWS.labels(self.backend, feature_set, "applied").inc(applied)
        if stale:
            ROWS.labels(self.backend, feature_set, "stale").inc(stale)
        WRITE_SECONDS.labels(self.backend).observe(time.perf_counter() - started)
        return applied

    @abstractmethod
    def read(self, entity: str, feature_sets: Sequence[str]) -> dict[str, Any]:
        """All features of one entity across ``feature_sets``, in one round trip.

        Keys are the feature names; absent or expired feature sets contribute nothing.

        >>> store.read("u42", ["user_activity", "user_purchases"])   # doctest: +SKIP
        {'user_activity__page_view_count_1h': 3, 'user_purchases__price_sum_7d': 12.5}
        """

    @abstractmethod
    def read_many(
        self, entities: Sequence[str], feature_sets: Sequence[str]
    ) -> list[dict[str, Any]]:
        """:meth:`read` for many entities, batched: one dict per entity, in input order.

        >>> store.read_many(["u1", "nobody"], ["user_activity"])          # doctest: +SKIP
        [{'user_activity__page_view_count_1h': 3}, {}]
        """

    @abstractmethod
    def count(self, feature_set: str) -> int:
        """Entities with an unexpired row in ``feature_set``.

        >>> store.count("user_activity")                                  # doctest: +SKIP
        100000
        """

    @abstractmethod
    def delete(self, feature_set: str, entities: Sequence[str] | None = None) -> int:
        """Remove the rows of ``entities`` (or the whole feature set); return rows removed.

        >>> store.delete("user_activity", ["u42"])       # e.g. a user asked to be forgotten
        1
        """

    @abstractmethod
    def feature_sets(self) -> list[FeatureSetInfo]:
        """Every feature set written to this store, by name: schema and freshness."""

    def info(self, feature_set: str) -> FeatureSetInfo | None:
        """What the store knows about one feature set (``None`` if never written).

        >>> store.info("user_activity").max_event_ts                      # doctest: +SKIP
        datetime.datetime(2026, 11, 7, 23, 59, 58, tzinfo=datetime.timezone.utc)
        """
        check_feature_set(feature_set)
        return next((i for i in self.feature_sets() if i.name == feature_set), None)

    def purge_expired(self) -> int:
        """Physically remove expired rows; return how many (Redis expires keys by itself)."""
        return 0

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~clickloop.errors.BackendUnavailableError` if the store is unusable."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. Further calls raise."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- backend primitives ------------------------------------------------------------

    @abstractmethod
    def _register_schema(self, feature_set: str, codec: RowCodec) -> None:
        """Store ``codec.schema_json`` under (feature_set, codec.sid), idempotently."""

    @abstractmethod
    def _load_schema(self, feature_set: str, sid: int) -> bytes | None:
        """The stored schema JSON of (feature_set, sid)."""

    @abstractmethod
    def _write_chunk(self, feature_set: str, chunk: Prepared, ttl_us: int | None) -> int:
        """Upsert one chunk with event-time ordering; return rows applied."""

    @abstractmethod
    def _record_write(
        self,
        feature_set: str,
        codec: RowCodec,
        max_event_ts: int,
        ttl_us: int | None,
        applied: int,
        stale: int,
    ) -> None:
        """Update the feature set's metadata (freshness, schema, counters)."""

    # -- shared helpers ----------------------------------------------------------------

    def _sets(self, feature_sets: Sequence[str]) -> tuple[str, ...]:
        """The feature sets of a read: validated once per distinct list, duplicates dropped."""
        if isinstance(feature_sets, str):
            raise UsageError(
                f"feature_sets must be a list of names, not the string {feature_sets!r}",
                hint=f"write [{feature_sets!r}]",
            )
        key = feature_sets if isinstance(feature_sets, tuple) else tuple(feature_sets)
        sets = self._read_sets.get(key)
        if sets is None:
            for name in key:
                check_feature_set(name)
            sets = tuple(dict.fromkeys(key))
            if len(self._read_sets) > 4096:  # callers build lists dynamically: stay bounded
                self._read_sets.clear()
            self._read_sets[key] = sets
        return sets

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"the {self.backend} online store is closed")

    def _writer_codec(self, feature_set: str, schema: pa.Schema) -> RowCodec:
        key = (feature_set, schema)
        codec = self._writer_codecs.get(key)
        if codec is None:
            codec = RowCodec.from_arrow(schema)
            with self._lock:
                if len(self._writer_codecs) > 1024:  # schemas churned: start over
                    self._writer_codecs.clear()
                self._writer_codecs[key] = codec
        return codec

    def _codec(self, feature_set: str, blob: bytes) -> RowCodec:
        sid = record_sid(blob)
        codec = self._codecs.get((feature_set, sid))
        if codec is None:
            # written by another process since we last looked: one extra round trip, once
            data = self._load_schema(feature_set, sid)
            if data is None:
                from clickloop.errors import DataError

                raise DataError(
                    f"online store row of feature set {feature_set!r} refers to schema {sid}, "
                    "which is not stored",
                    hint=f"re-materialise the feature set (delete it first: "
                    f"`store.delete({feature_set!r})`)",
                )
            codec = RowCodec.from_json(data)
            self._codecs[(feature_set, sid)] = codec
        return codec

    def _merge(self, found: Sequence[tuple[str, bytes]], feature_sets: Sequence[str]
               ) -> dict[str, Any]:  # fmt: skip
        """Decode the rows of one entity into one dict; refuse clashing feature names."""
        out: dict[str, Any] = {}
        total = 0
        for fs, blob in found:
            codec = self._codecs.get((fs, record_sid(blob))) or self._codec(fs, blob)
            values = codec.decode(blob)
            total += len(values)
            out.update(values)
        if total != len(out):
            _clash(found, feature_sets, self._codec)
        return out


def _clash(
    found: Sequence[tuple[str, bytes]],
    feature_sets: Sequence[str],
    codec_of: Callable[[str, bytes], RowCodec],
) -> None:
    owner: dict[str, str] = {}
    for fs, blob in found:
        for name in codec_of(fs, blob).names:
            if name in owner:
                raise UsageError(
                    f"feature {name!r} is in both feature sets {owner[name]!r} and {fs!r}; "
                    f"one read cannot return both (read: {', '.join(feature_sets)})",
                    hint="give features names prefixed by their set, e.g. "
                    f"'{fs}__{name}', or read the sets separately",
                )
            owner[name] = fs


def open_online_store(project: Project) -> OnlineStore:
    """The online store the project configures (``stores.online``).

    >>> with open_online_store(Project.load("shop")) as store:         # doctest: +SKIP
    ...     store.read("u42", ["user_activity"])
    """
    from clickloop.config.infra import RedisOnlineConfig

    cfg = project.config.stores.online
    if isinstance(cfg, RedisOnlineConfig):
        from clickloop.stores.redis import RedisOnlineStore

        return RedisOnlineStore(cfg.url.get_secret_value(), key_prefix=cfg.key_prefix)
    from clickloop.stores.sqlite import SqliteOnlineStore

    path = project.resolve_path(cfg.path) if cfg.path else project.state_path("online.sqlite")
    return SqliteOnlineStore(path)
