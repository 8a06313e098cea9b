"""The embedded online store: one SQLite file in WAL mode, no server.

Layout (format version 1, ``PRAGMA user_version``)::

    online_rows(fs, entity, ts, expires, value)   PRIMARY KEY (fs, entity), WITHOUT ROWID
    online_schemas(fs, sid, schema)               content-addressed schemas (see codec)
    online_sets(fs, sid, ttl_us, last_write_us, max_event_ts, rows_applied, rows_stale)

``ts`` and ``expires`` are µs since the epoch; ``value`` is the binary record of
:mod:`clickloop.stores.codec`. The event-time rule is one UPSERT: the stored row
is replaced only if the new row is at least as recent, or the stored one has
expired. Reading one entity across *k* feature sets is one query (*k* primary-key
seeks in one statement).

Concurrency: WAL lets readers run while a writer commits; each thread gets its
own connection (SQLite connections must not be shared between threads), and
writers in several threads or processes queue on the database lock
(``busy_timeout``). ``synchronous=NORMAL``: a committed write survives a crash
of the process; after a power loss the last commits may be lost, which the
event-time rule makes harmless (materialisation is re-run, and idempotent).

>>> store = SqliteOnlineStore(".clickloop/online.sqlite")
>>> store.write("user_activity", rows)                   # doctest: +SKIP
>>> store.read("u42", ["user_activity"])                 # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import orjson

from clickloop.errors import BackendUnavailableError, DataError
from clickloop.stores.base import (
    FeatureSetInfo,
    OnlineStore,
    Prepared,
    check_entities,
    check_feature_set,
    now_us,
    us_to_datetime,
)
from clickloop.stores.codec import RowCodec, record_sid

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
_BACKSTOP_PAGES: Final = 16_384  # 128 MiB of WAL: checkpoint in the commit only past this
_MAX_VARS: Final = 30_000  # SQLite ≥ 3.32 allows 32766 bound parameters per statement
_DDL: Final = """
CREATE TABLE IF NOT EXISTS online_rows (
    fs TEXT NOT NULL, entity TEXT NOT NULL, ts INTEGER NOT NULL, expires INTEGER,
    value BLOB NOT NULL, PRIMARY KEY (fs, entity)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS online_schemas (
    fs TEXT NOT NULL, sid INTEGER NOT NULL, schema BLOB NOT NULL, created_us INTEGER NOT NULL,
    PRIMARY KEY (fs, sid));
CREATE TABLE IF NOT EXISTS online_sets (
    fs TEXT PRIMARY KEY, sid INTEGER NOT NULL, ttl_us INTEGER, last_write_us INTEGER NOT NULL,
    max_event_ts INTEGER NOT NULL, rows_applied INTEGER NOT NULL DEFAULT 0,
    rows_stale INTEGER NOT NULL DEFAULT 0);
"""
# {now} is inlined per call (a constant for the whole batch; binding it per row costs more)
_UPSERT: Final = (
    "INSERT INTO online_rows (fs, entity, ts, expires, value) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (fs, entity) DO UPDATE SET ts = excluded.ts, expires = excluded.expires, "
    "value = excluded.value WHERE excluded.ts >= online_rows.ts "
    "OR online_rows.expires <= {now}"
)
_RECORD: Final = (
    "INSERT INTO online_sets (fs, sid, ttl_us, last_write_us, max_event_ts, rows_applied, "
    "rows_stale) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (fs) DO UPDATE SET "
    "sid = excluded.sid, ttl_us = excluded.ttl_us, last_write_us = excluded.last_write_us, "
    "max_event_ts = max(max_event_ts, excluded.max_event_ts), "
    "rows_applied = rows_applied + excluded.rows_applied, "
    "rows_stale = rows_stale + excluded.rows_stale"
)


class _Checkpointer:
    """Copies the WAL into the database in a background thread, off the write path.

    SQLite's automatic checkpoint runs inside the commit that crosses the threshold,
    so one write in a few pays for the fsyncs of all (100-300 ms per 100k rows
    here). A PASSIVE checkpoint runs alongside readers and the next writer; the
    thread is poked after every committed chunk. The automatic checkpoint stays on
    at a high threshold as a backstop.
    """

    def __init__(self, path: Path, busy_ms: int) -> None:
        self._path, self._busy_ms = path, busy_ms
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name="online-store-checkpoint", daemon=True
        )
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(60)

    def _run(self) -> None:
        try:
            con = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            con.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        except sqlite3.Error as exc:
            log.warning("no background checkpoints for %s: %s", self._path, exc)
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the backstop checkpoint keeps the WAL bounded
                    log.warning("background checkpoint of %s failed: %s", self._path, exc)
        finally:
            con.close()


class SqliteOnlineStore(OnlineStore):
    """Online store in one SQLite file (WAL). Safe to share between threads.

    ``path`` is created with its parent directories. ``busy_timeout`` is how long a
    writer waits for another writer's lock before failing.

    >>> with SqliteOnlineStore("/tmp/online.sqlite") as store:
    ...     store.count("user_activity")
    0
    """

    backend = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: timedelta | None = None
                 ) -> None:  # fmt: skip
        super().__init__()
        self.path = Path(path)
        self._busy_ms = int((busy_timeout or timedelta(seconds=30)).total_seconds() * 1000)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._read_sql: dict[int, str] = {}
        self._checkpointer: _Checkpointer | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailableError(
                f"cannot create the directory of the online store {self.path}: {exc}"
            ) from exc
        self._setup(self._con())

    # -- connections -------------------------------------------------------------------

    def _con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is not None:
            return con
        self._check_open()
        try:
            con = sqlite3.connect(
                self.path,
                isolation_level=None,  # explicit BEGIN/COMMIT
                check_same_thread=False,  # only close() touches another thread's connection
                cached_statements=256,
            )
            con.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            con.execute("PRAGMA synchronous = NORMAL")
            con.execute("PRAGMA cache_size = -65536")  # 64 MiB of page cache per connection
            con.execute("PRAGMA mmap_size = 268435456")  # reads from the page cache, no copy
            con.execute("PRAGMA temp_store = MEMORY")
            con.execute(f"PRAGMA wal_autocheckpoint = {_BACKSTOP_PAGES}")
        except sqlite3.OperationalError as exc:
            raise BackendUnavailableError(
                f"cannot open the online store {self.path}: {exc}",
                hint="check the path and its permissions (stores.online.path)",
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise DataError(
                f"{self.path} is not a usable online store: {exc}",
                hint="point stores.online.path at a new file, or delete this one and "
                "re-materialise",
            ) from exc
        self._local.con = con
        with self._lock:
            self._all.append(con)
        return con

    def _setup(self, con: sqlite3.Connection) -> None:
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise DataError(
                    f"the online store {self.path} was written by a newer clickloop "
                    f"(format {version}; this one reads {SCHEMA_VERSION})",
                    hint="upgrade clickloop",
                )
            if version == 0:
                con.execute("PRAGMA page_size = 8192")  # ~400-byte rows: fewer, fuller pages
                con.execute("PRAGMA journal_mode = WAL")
                con.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _DDL.split(";"):
                        if statement.strip():
                            con.execute(statement)
                    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            mode = con.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                con.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            raise DataError(
                f"{self.path} is not a usable online store: {exc}",
                hint="point stores.online.path at a new file, or delete this one and "
                "re-materialise",
            ) from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        with self._lock:
            for con in self._all:
                con.close()  # the last connection to close checkpoints and removes the WAL
            self._all.clear()
        self._local = threading.local()

    def ping(self) -> None:
        try:
            self._con().execute("SELECT count(*) FROM online_sets").fetchone()
        except sqlite3.Error as exc:
            raise BackendUnavailableError(f"online store {self.path}: {exc}") from exc

    # -- writing -------------------------------------------------------------------------

    def _register_schema(self, feature_set: str, codec: RowCodec) -> None:
        con = self._con()
        stored = self._load_schema(feature_set, codec.sid)
        if stored is None:
            with self._transaction(con, f"registering the schema of {feature_set!r}"):
                con.execute(
                    "INSERT INTO online_schemas (fs, sid, schema, created_us) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (fs, sid) DO NOTHING",
                    (feature_set, codec.sid, codec.schema_json, now_us()),
                )
            stored = self._load_schema(feature_set, codec.sid)
        if stored != codec.schema_json:  # a 32-bit hash collision: never silently mix
            raise DataError(
                f"schema id {codec.sid} of feature set {feature_set!r} is already used by "
                "another schema",
                hint="rename a feature (any change of the schema changes its id)",
            )

    def _load_schema(self, feature_set: str, sid: int) -> bytes | None:
        row = (
            self._con()
            .execute(
                "SELECT schema FROM online_schemas WHERE fs = ? AND sid = ?", (feature_set, sid)
            )
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def _write_chunk(self, feature_set: str, chunk: Prepared, ttl_us: int | None) -> int:
        con = self._con()
        ts = chunk.ts_us.tolist()
        expires = itertools.repeat(None) if ttl_us is None else (chunk.ts_us + ttl_us).tolist()
        params = zip(
            itertools.repeat(feature_set),
            chunk.entities.to_pylist(),
            ts,
            expires,
            chunk.records.to_pylist(),
        )
        before = con.total_changes
        with self._transaction(con, f"writing feature set {feature_set!r}"):
            con.executemany(_UPSERT.format(now=now_us()), params)
        self._checkpoint()
        return con.total_changes - before

    def _checkpoint(self) -> None:
        if self._checkpointer is None:
            with self._lock:
                if self._checkpointer is None and not self._closed:
                    self._checkpointer = _Checkpointer(self.path, self._busy_ms)
        if self._checkpointer is not None:
            self._checkpointer.poke()

    @contextmanager
    def _transaction(self, con: sqlite3.Connection, what: str) -> Iterator[None]:
        """One write transaction; a lock held too long by another writer is a clear error."""
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            raise BackendUnavailableError(
                f"online store {self.path} stayed locked by another writer while {what} "
                f"({self._busy_ms} ms): {exc}",
                hint="another process is writing a large batch; retry, or raise busy_timeout",
            ) from exc

    def _record_write(
        self,
        feature_set: str,
        codec: RowCodec,
        max_event_ts: int,
        ttl_us: int | None,
        applied: int,
        stale: int,
    ) -> None:
        con = self._con()
        with self._transaction(con, f"recording a write of {feature_set!r}"):
            con.execute(
                _RECORD, (feature_set, codec.sid, ttl_us, now_us(), max_event_ts, applied, stale)
            )

    def purge_expired(self) -> int:
        """Delete expired rows (they already read as absent); return how many."""
        con = self._con()
        with self._transaction(con, "purging expired rows"):
            cur = con.execute("DELETE FROM online_rows WHERE expires <= ?", (now_us(),))
        return cur.rowcount

    # -- reading -------------------------------------------------------------------------

    def _sql(self, n_sets: int) -> str:
        sql = self._read_sql.get(n_sets)
        if sql is None:
            fs = "fs = ?" if n_sets == 1 else f"fs IN ({', '.join('?' * n_sets)})"
            sql = f"SELECT fs, expires, value FROM online_rows WHERE {fs} AND entity = ?"
            self._read_sql[n_sets] = sql
        return sql

    def read(self, entity: str, feature_sets: Sequence[str]) -> dict[str, Any]:
        feature_sets = self._sets(feature_sets)
        if not feature_sets:
            return {}
        con = getattr(self._local, "con", None) or self._con()
        rows = con.execute(self._sql(len(feature_sets)), (*feature_sets, entity)).fetchall()
        if not rows:
            return {}
        now = now_us()
        found = [(fs, blob) for fs, expires, blob in rows if expires is None or expires > now]
        if len(found) == 1:  # the common case: skip the merge bookkeeping
            fs, blob = found[0]
            codec = self._codecs.get((fs, record_sid(blob))) or self._codec(fs, blob)
            return codec.decode(blob)
        return self._merge(found, feature_sets)

    def read_many(
        self, entities: Sequence[str], feature_sets: Sequence[str]
    ) -> list[dict[str, Any]]:
        check_entities(entities)
        feature_sets = self._sets(feature_sets)
        if not feature_sets or not entities:
            return [{} for _ in entities]
        con = self._con()
        by_entity: dict[str, list[tuple[str, bytes]]] = {}
        unique = list(dict.fromkeys(entities))
        step = max(1, _MAX_VARS - len(feature_sets))
        sets_sql = ", ".join("?" * len(feature_sets))
        now = now_us()
        for start in range(0, len(unique), step):
            part = unique[start : start + step]
            sql = (
                "SELECT entity, fs, expires, value FROM online_rows "
                f"WHERE fs IN ({sets_sql}) AND entity IN ({', '.join('?' * len(part))})"
            )
            for ent, fs, expires, blob in con.execute(sql, (*feature_sets, *part)):
                if expires is None or expires > now:
                    by_entity.setdefault(ent, []).append((fs, blob))
        order = {fs: i for i, fs in enumerate(feature_sets)}
        decoded: dict[str, dict[str, Any]] = {}
        for ent, found in by_entity.items():
            found.sort(key=lambda r: order[r[0]])  # same merge order as read()
            decoded[ent] = self._merge(found, feature_sets)
        return [dict(decoded[e]) if e in decoded else {} for e in entities]

    # -- operators -----------------------------------------------------------------------

    def count(self, feature_set: str) -> int:
        check_feature_set(feature_set)
        row = (
            self._con()
            .execute(
                "SELECT count(*) FROM online_rows WHERE fs = ? "
                "AND (expires IS NULL OR expires > ?)",
                (feature_set, now_us()),
            )
            .fetchone()
        )
        return int(row[0])

    def delete(self, feature_set: str, entities: Sequence[str] | None = None) -> int:
        check_feature_set(feature_set)
        if entities is not None:
            check_entities(entities)
        con = self._con()
        with self._transaction(con, f"deleting from feature set {feature_set!r}"):
            if entities is None:
                removed = con.execute(
                    "DELETE FROM online_rows WHERE fs = ?", (feature_set,)
                ).rowcount
                # schemas stay (content-addressed, a few bytes): a writer elsewhere may be
                # between registering one and writing rows that use it
                con.execute("DELETE FROM online_sets WHERE fs = ?", (feature_set,))
            else:
                removed = 0
                unique = list(dict.fromkeys(entities))
                for start in range(0, len(unique), _MAX_VARS):
                    part = unique[start : start + _MAX_VARS]
                    removed += con.execute(
                        f"DELETE FROM online_rows WHERE fs = ? AND entity IN "
                        f"({', '.join('?' * len(part))})",
                        (feature_set, *part),
                    ).rowcount
        return removed

    def feature_sets(self) -> list[FeatureSetInfo]:
        con = self._con()
        out = []
        rows = con.execute(
            "SELECT s.fs, s.ttl_us, s.last_write_us, s.max_event_ts, s.rows_applied, "
            "s.rows_stale, c.schema FROM online_sets s LEFT JOIN online_schemas c "
            "ON c.fs = s.fs AND c.sid = s.sid ORDER BY s.fs"
        ).fetchall()
        for fs, ttl_us, last_us, max_ts, applied, stale, schema in rows:
            columns = orjson.loads(schema)["columns"] if schema is not None else []
            out.append(
                FeatureSetInfo(
                    name=fs,
                    features={c[0]: c[3] for c in columns},
                    last_write=us_to_datetime(last_us),
                    max_event_ts=us_to_datetime(max_ts),
                    ttl=None if ttl_us is None else timedelta(microseconds=ttl_us),
                    rows_applied=applied,
                    rows_stale=stale,
                )
            )
        return out
