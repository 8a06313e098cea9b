"""The production online store: Redis (any Redis ≥ 6.2 or compatible server).

Keys (``key_prefix`` defaults to ``cl:``; feature-set names cannot contain ``:``)::

    {prefix}f:{feature_set}:{entity}   string   the binary record of stores.codec
                                                (header carries the event time)
    {prefix}s:{feature_set}            hash     schema id → schema JSON
    {prefix}m:{feature_set}            hash     sid, ttl_us, last_write_us, max_event_ts,
                                                rows_applied, rows_stale

Writes run a Lua script per chunk of :data:`KEYS_PER_CALL` keys: for each key it
reads the stored event time (``GETRANGE`` of the 14-byte header), keeps the newer
row (ties: the new one) and sets it with ``PXAT`` = event time + TTL, so Redis
expires keys by itself. The commands are spelt in RESP by Arrow kernels (no
Python object per row) and pipelined, :data:`CALLS_PER_ROUND_TRIP` per round trip.
Reading one entity across *k* feature sets is one ``MGET``; many entities are
``MGET`` chunks in one pipeline (one round trip).

Threads: redis-py's client and connection pool are thread-safe, so a store
object can be shared. Redis Cluster is not supported (the write script touches
keys of many slots).

>>> store = RedisOnlineStore("redis://127.0.0.1:6379/0")     # doctest: +SKIP
>>> store.read("u42", ["user_activity", "user_purchases"])   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from clickloop.errors import BackendUnavailableError, DataError, UsageError, require
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

KEYS_PER_CALL: Final = 1000  # keys per script call: amortises client packing, short server stalls
CALLS_PER_ROUND_TRIP: Final = 16
MGET_CHUNK: Final = 2000

# KEYS: row keys. ARGV[1]: TTL in ms ("0" = none); ARGV[1 + i]: the record of KEYS[i].
# Event times are µs since the epoch, exact in Lua's doubles until the year 2255.
_WRITE: Final = """
local ttl = tonumber(ARGV[1])
local now = 0
if ttl > 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local applied = 0
for i, key in ipairs(KEYS) do
  local rec = ARGV[i + 1]
  local ts = struct.unpack('<i8', rec, 7)
  local old = redis.call('GETRANGE', key, 0, 13)
  if string.len(old) < 14 or ts >= struct.unpack('<i8', old, 7) then
    applied = applied + 1
    if ttl > 0 then
      local exp = math.floor(ts / 1000) + ttl
      if exp <= now then
        redis.call('DEL', key)
      else
        redis.call('SET', key, rec, 'PXAT', exp)
      end
    else
      redis.call('SET', key, rec)
    end
  end
end
return applied
"""
# KEYS[1]: meta hash. ARGV: sid, ttl_us ("" = none), last_write_us, max_event_ts, applied, stale
_RECORD: Final = """
local cur = redis.call('HGET', KEYS[1], 'max_event_ts')
if not cur or tonumber(ARGV[4]) > tonumber(cur) then
  redis.call('HSET', KEYS[1], 'max_event_ts', ARGV[4])
end
redis.call('HSET', KEYS[1], 'sid', ARGV[1], 'ttl_us', ARGV[2], 'last_write_us', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'rows_applied', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'rows_stale', ARGV[6])
return 1
"""
_GLOB = re.compile(r"([\\*?\[\]])")


def _lit(text: str) -> pa.Scalar:
    return pa.scalar(text.encode(), pa.large_binary())


def _bulk_strings(values: pa.Array) -> tuple[memoryview, list[int]]:
    """Every value as a RESP bulk string (``$len\\r\\n…\\r\\n``), concatenated, and offsets."""
    values = values.cast(pa.large_binary())
    lengths = pc.binary_length(values).cast(pa.string()).cast(pa.large_binary())
    out = pc.binary_join_element_wise(
        _lit("$"), lengths, _lit("\r\n"), values, _lit("\r\n"), _lit("")
    )
    offsets = np.frombuffer(out.buffers()[1], dtype=np.int64)
    return memoryview(out.buffers()[2]), offsets[out.offset : out.offset + len(out) + 1].tolist()


def _safe_url(url: str) -> str:
    """The URL without credentials, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RedisOnlineStore(OnlineStore):
    """Online store in Redis. Safe to share between threads.

    ``url`` is a redis-py URL (``redis://[:password@]host:port/db``,
    ``rediss://`` for TLS, ``unix://``). ``key_prefix`` namespaces every key, so
    several projects can share one server.

    >>> store = RedisOnlineStore("redis://127.0.0.1:6379/0", key_prefix="shop:")  # doctest: +SKIP
    """

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "cl:",
        socket_timeout: timedelta = timedelta(seconds=5),
        max_connections: int | None = None,
    ) -> None:
        super().__init__()
        redis = require("redis", "redis", feature="the Redis online store")
        self._where = _safe_url(url)
        self.prefix = key_prefix
        self._row = f"{key_prefix}f:"
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
        )
        self._response_error: type[BaseException] = redis.exceptions.ResponseError
        try:
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout.total_seconds(),
                socket_connect_timeout=socket_timeout.total_seconds(),
                max_connections=max_connections,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise UsageError(
                f"invalid Redis URL for the online store ({self._where}): {exc}",
                hint="use redis://[:password@]host:port/db (stores.online.url)",
            ) from exc
        self._write_script = self._client.register_script(_WRITE)
        self._record_script = self._client.register_script(_RECORD)

    @contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Turn redis-py's connection errors into one clear error naming the server."""
        self._check_open()
        try:
            yield
        except self._errors as exc:
            raise BackendUnavailableError(
                f"Redis online store at {self._where} is unreachable while {what}: {exc}",
                hint="check that Redis is running and stores.online.url is right "
                "(`clickloop doctor`)",
            ) from exc
        except self._response_error as exc:
            raise BackendUnavailableError(
                f"Redis online store at {self._where} refused {what}: {exc}"
            ) from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._client.close()

    def ping(self) -> None:
        with self._calls("pinging"):
            self._client.ping()

    # -- writing -------------------------------------------------------------------------

    def _register_schema(self, feature_set: str, codec: RowCodec) -> None:
        key = f"{self.prefix}s:{feature_set}"
        with self._calls(f"registering the schema of {feature_set!r}"):
            pipe = self._client.pipeline(transaction=False)
            pipe.hsetnx(key, str(codec.sid), codec.schema_json)
            pipe.hget(key, str(codec.sid))
            stored = pipe.execute()[1]
        if stored != codec.schema_json:  # a 32-bit hash collision: never silently mix
            raise DataError(
                f"schema id {codec.sid} of feature set {feature_set!r} is already used by "
                "another schema",
                hint="rename a feature (any change of the schema changes its id)",
            )

    def _load_schema(self, feature_set: str, sid: int) -> bytes | None:
        with self._calls(f"loading a schema of {feature_set!r}"):
            data = self._client.hget(f"{self.prefix}s:{feature_set}", str(sid))
        return None if data is None else bytes(data)

    def _write_chunk(self, feature_set: str, chunk: Prepared, ttl_us: int | None) -> int:
        # redis-py packs every argument in Python (about 8 µs per row here, more than the
        # server's work); the commands are spelt in RESP with Arrow kernels instead and
        # sent over a pooled connection, CALLS_PER_ROUND_TRIP commands per round trip.
        keys = pc.binary_join_element_wise(
            _lit(f"{self._row}{feature_set}:"), chunk.entities.cast(pa.large_binary()), _lit("")
        )
        kbuf, koff = _bulk_strings(keys)
        rbuf, roff = _bulk_strings(chunk.records)
        ttl = b"0" if ttl_us is None else str(max(1, ttl_us // 1000)).encode()
        ttl_arg = b"$%d\r\n%s\r\n" % (len(ttl), ttl)
        n = len(chunk.entities)
        applied = 0
        with self._calls(f"writing feature set {feature_set!r}"):
            sha = self._client.script_load(_WRITE).encode()
            pool = self._client.connection_pool
            conn = pool.get_connection()
            try:
                for first in range(0, n, KEYS_PER_CALL * CALLS_PER_ROUND_TRIP):
                    last = min(n, first + KEYS_PER_CALL * CALLS_PER_ROUND_TRIP)
                    calls = 0
                    for a in range(first, last, KEYS_PER_CALL):
                        b = min(last, a + KEYS_PER_CALL)
                        cnt = str(b - a).encode()
                        head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$%d\r\n%s\r\n" % (
                            4 + 2 * (b - a),
                            sha,
                            len(cnt),
                            cnt,
                        )
                        conn.send_packed_command(
                            [head, kbuf[koff[a] : koff[b]], ttl_arg, rbuf[roff[a] : roff[b]]]
                        )
                        calls += 1
                    for _ in range(calls):
                        applied += int(conn.read_response())
            except BaseException:
                conn.disconnect()  # unread replies would desynchronise the connection
                raise
            finally:
                pool.release(conn)
        return applied

    def _record_write(
        self,
        feature_set: str,
        codec: RowCodec,
        max_event_ts: int,
        ttl_us: int | None,
        applied: int,
        stale: int,
    ) -> None:
        args = [codec.sid, "" if ttl_us is None else ttl_us, now_us(), max_event_ts, applied, stale]
        with self._calls(f"recording a write of {feature_set!r}"):
            self._record_script(keys=[f"{self.prefix}m:{feature_set}"], args=args)

    # -- reading -------------------------------------------------------------------------

    def read(self, entity: str, feature_sets: Sequence[str]) -> dict[str, Any]:
        feature_sets = self._sets(feature_sets)
        if not feature_sets:
            return {}
        row = self._row
        keys = [f"{row}{fs}:{entity}" for fs in feature_sets]
        with self._calls("reading features"):
            blobs = self._client.mget(keys)
        found = [(fs, b) for fs, b in zip(feature_sets, blobs, strict=True) if b is not None]
        if not found:
            return {}
        if len(found) == 1:
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
        row = self._row
        keys = [f"{row}{fs}:{e}" for e in entities for fs in feature_sets]
        with self._calls("reading features"):
            if len(keys) <= MGET_CHUNK:
                blobs = self._client.mget(keys)
            else:
                pipe = self._client.pipeline(transaction=False)
                for start in range(0, len(keys), MGET_CHUNK):
                    pipe.mget(keys[start : start + MGET_CHUNK])
                blobs = [b for part in pipe.execute() for b in part]
        k = len(feature_sets)
        out = []
        for i in range(len(entities)):
            found = [
                (fs, b)
                for fs, b in zip(feature_sets, blobs[i * k : (i + 1) * k], strict=True)
                if b is not None
            ]
            out.append(self._merge(found, feature_sets) if found else {})
        return out

    # -- operators -----------------------------------------------------------------------

    def _scan(self, pattern: str) -> Iterator[list[bytes]]:
        cursor = 0
        while True:
            cursor, keys = self._client.scan(cursor, match=pattern, count=1000)
            if keys:
                yield keys
            if cursor == 0:
                return

    def _pattern(self, feature_set: str) -> str:
        return _GLOB.sub(r"\\\1", f"{self._row}{feature_set}:") + "*"

    def count(self, feature_set: str) -> int:
        """Entities with a row (a SCAN over the keyspace: an operator command, not a hot path)."""
        check_feature_set(feature_set)
        with self._calls(f"counting feature set {feature_set!r}"):
            return sum(len(keys) for keys in self._scan(self._pattern(feature_set)))

    def delete(self, feature_set: str, entities: Sequence[str] | None = None) -> int:
        check_feature_set(feature_set)
        if entities is not None:
            check_entities(entities)
        removed = 0
        with self._calls(f"deleting from feature set {feature_set!r}"):
            if entities is None:
                for keys in self._scan(self._pattern(feature_set)):
                    removed += int(self._client.unlink(*keys))
                # schemas stay (content-addressed, a few bytes): a writer elsewhere may be
                # between registering one and writing rows that use it
                self._client.unlink(f"{self.prefix}m:{feature_set}")
            else:
                doomed = [f"{self._row}{feature_set}:{e}" for e in dict.fromkeys(entities)]
                for start in range(0, len(doomed), MGET_CHUNK):
                    removed += int(self._client.unlink(*doomed[start : start + MGET_CHUNK]))
        return removed

    def feature_sets(self) -> list[FeatureSetInfo]:
        meta_prefix = f"{self.prefix}m:"
        out = []
        with self._calls("listing feature sets"):
            names = sorted(
                k.decode()[len(meta_prefix) :]
                for keys in self._scan(_GLOB.sub(r"\\\1", meta_prefix) + "*")
                for k in keys
            )
            for name in names:
                meta = {
                    k.decode(): v.decode()
                    for k, v in self._client.hgetall(meta_prefix + name).items()
                }
                if not meta:
                    continue
                schema = self._client.hget(f"{self.prefix}s:{name}", meta["sid"])
                columns = orjson.loads(schema)["columns"] if schema else []
                out.append(
                    FeatureSetInfo(
                        name=name,
                        features={c[0]: c[3] for c in columns},
                        last_write=us_to_datetime(int(meta["last_write_us"])),
                        max_event_ts=us_to_datetime(int(meta["max_event_ts"])),
                        ttl=timedelta(microseconds=int(meta["ttl_us"])) if meta["ttl_us"] else None,
                        rows_applied=int(meta.get("rows_applied", 0)),
                        rows_stale=int(meta.get("rows_stale", 0)),
                    )
                )
        return out
