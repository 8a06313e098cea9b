"""The dedupe index: which ``event_id`` values the lake accepted, and when they happened.

An ``event_id`` is a duplicate when the lake already accepted the same id with
an event time within ``ingest.dedupe_horizon`` of it. Checking that must stay
fast at tens of millions of events, so ids are reduced to 64-bit hashes
(:func:`id_hash`, vectorised, stable across machines and versions) and kept
as sorted runs of ``(hash, ts)`` pairs:

* on disk, one **sidecar** per lake data file (``_index/…/<file>.ids``),
  written before the commit that names both, so the index is always exactly
  the committed data — a crash can never leave them out of step;
* in memory, an :class:`IdIndex`: a few sorted runs merged LSM-style (a new
  run is merged into the previous one while it is at least half its size), so
  adding is amortised O(n log n) and a lookup is a binary search per run.

Two distinct ids collide with probability about n²/2⁶⁵ (3·10⁻⁶ for 10M ids
inside one horizon); a collision would drop the later event as a duplicate.

>>> import pyarrow as pa
>>> h = id_hash(pa.array(["a", "b", "a"]))
>>> bool(h[0] == h[2]), bool(h[0] == h[1])
(True, False)
>>> idx = IdIndex()
>>> idx.add(h[:1], np.array([0]))
>>> idx.contains(h, np.array([0, 0, 10**12]), horizon_us=10**6).tolist()
[True, False, False]
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np
import pyarrow as pa

MAGIC: Final = b"CLIDS002"  # sidecar format and hash function version
_HEADER: Final = struct.Struct("<8sQ")
_M1: Final = np.uint64(0xFF51AFD7ED558CCD)
_M2: Final = np.uint64(0xC4CEB9FE1A85EC53)
_P: Final = np.uint64(0x9E3779B97F4A7C15)
_SEED: Final = np.uint64(0x636C69636B6C6F6F)  # "clickloo"


def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: a bijection with full avalanche."""
    h ^= h >> np.uint64(33)
    h *= _M1
    h ^= h >> np.uint64(33)
    h *= _M2
    h ^= h >> np.uint64(33)
    return h


def id_hash(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit hashes (``uint64``) of a string array's values, vectorised.

    The bytes are read as little-endian 64-bit words, each folded in through
    MurmurHash3's finaliser, with the length mixed in first. Nulls are not
    allowed (an accepted event always has an ``event_id``).
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if pa.types.is_large_string(ids.type) or pa.types.is_string_view(ids.type):
        ids = ids.cast(pa.string())
    n = len(ids)
    if n == 0:
        return np.zeros(0, np.uint64)
    if ids.null_count:
        raise ValueError("id_hash: ids must not be null")
    offsets = np.frombuffer(ids.buffers()[1], np.int32)[ids.offset : ids.offset + n + 1]
    buf = ids.buffers()[2]
    data = np.frombuffer(buf, np.uint8) if buf is not None else np.zeros(0, np.uint8)
    start, end = int(offsets[0]), int(offsets[-1])
    lengths = np.diff(offsets).astype(np.int64)
    longest = int(lengths.max())
    words = max(1, (longest + 7) // 8)
    padded = np.zeros((n, words * 8), np.uint8)
    if int(lengths.min()) == longest:  # fixed width (UUIDs): one reshape, no scatter
        padded[:, :longest] = data[start:end].reshape(n, longest)
    else:
        rows = np.repeat(np.arange(n), lengths)
        cols = np.arange(end - start) - np.repeat(offsets[:-1].astype(np.int64) - start, lengths)
        padded[rows, cols] = data[start:end]
    mat = padded.view("<u8")
    h = _SEED ^ (lengths.astype(np.uint64) * _P)
    h = _fmix(h)
    # each id folds in only its own words, so its hash never depends on the other ids
    # of the batch (the padding width does)
    own = (lengths + 7) // 8
    uniform = bool((own == words).all())
    for j in range(words):
        mixed = _fmix((h ^ mat[:, j]) * _P)
        h = mixed if uniform else np.where(own > j, mixed, h)
    return h


class IdIndex:
    """Sorted runs of ``(hash, ts_us)`` with a membership test bounded by a time horizon."""

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(h) for h, _ in self._runs)

    @property
    def runs(self) -> int:
        return len(self._runs)

    def add(self, hashes: np.ndarray, ts: np.ndarray, *, presorted: bool = False) -> None:
        """Add pairs (``ts`` in microseconds); ``presorted`` when already sorted by hash."""
        if len(hashes) == 0:
            return
        h = np.asarray(hashes, np.uint64)
        t = np.asarray(ts, np.int64)
        if not presorted:
            order = np.argsort(h, kind="stable")
            h, t = h[order], t[order]
        self._runs.append((h, t))
        while len(self._runs) > 1 and 2 * len(self._runs[-1][0]) >= len(self._runs[-2][0]):
            self._merge_last_two()

    def _merge_last_two(self) -> None:
        (h2, t2), (h1, t1) = self._runs.pop(), self._runs.pop()
        h = np.concatenate([h1, h2])
        t = np.concatenate([t1, t2])
        order = np.argsort(h, kind="stable")  # timsort: linear on two sorted runs
        self._runs.append((h[order], t[order]))

    def contains(
        self,
        hashes: np.ndarray,
        ts: np.ndarray,
        horizon_us: int,
        order: np.ndarray | None = None,
    ) -> np.ndarray:
        """For each pair, whether the index holds the same hash with ``|Δts| <= horizon_us``
        (``order``: an argsort of ``hashes``, if the caller has one)."""
        n = len(hashes)
        found = np.zeros(n, bool)
        if n == 0 or not self._runs:
            return found
        q = np.asarray(hashes, np.uint64)
        qt = np.asarray(ts, np.int64)
        if order is None:
            order = np.argsort(q)  # sorted keys make numpy's binary searches cache-friendly
        qs, qts = q[order], qt[order]
        hit = np.zeros(n, bool)
        for rh, rt in self._runs:
            pos = np.searchsorted(rh, qs)
            cand = np.nonzero(pos < len(rh))[0]
            cand = cand[rh[pos[cand]] == qs[cand]]
            # the same hash may repeat (an id reused beyond the horizon): walk each run of
            # equal hashes until one is close enough in time or the hash changes
            while len(cand):
                p = pos[cand]
                near = np.abs(rt[p] - qts[cand]) <= horizon_us
                hit[cand[near]] = True
                cand, p = cand[~near], p[~near] + 1
                more = p < len(rh)
                cand, p = cand[more], p[more]
                same = rh[p] == qs[cand]
                cand = cand[same]
                pos[cand] = p[same]
        found[order] = hit
        return found

    def trim(self, before_us: int) -> int:
        """Forget pairs whose time is before ``before_us``; return how many were dropped."""
        dropped = 0
        runs = []
        for h, t in self._runs:
            keep = t >= before_us
            dropped += int(len(keep) - keep.sum())
            if keep.any():
                runs.append((h[keep], t[keep]))
        self._runs = runs
        return dropped

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """All pairs, sorted by hash (merges the runs)."""
        while len(self._runs) > 1:
            self._merge_last_two()
        if not self._runs:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        return self._runs[0]


def first_occurrences(hashes: np.ndarray, ts: np.ndarray, horizon_us: int) -> np.ndarray:
    """Mask of rows that are not a repeat of an *earlier row of the same batch*.

    A row repeats an earlier one when both have the same hash and event times
    within the horizon; rows are considered in order, and a row dropped as a
    repeat does not itself make later rows repeats.
    """
    n = len(hashes)
    keep = np.ones(n, bool)
    if n < 2:
        return keep
    keep[repeats(hashes, ts, horizon_us, np.argsort(hashes, kind="stable"))] = False
    return keep


def repeats(hashes: np.ndarray, ts: np.ndarray, horizon_us: int, order: np.ndarray) -> np.ndarray:
    """Positions (among ``order``: rows sorted by hash, equal hashes in input order) that
    repeat an earlier kept row of the same hash within the horizon."""
    out: list[int] = []
    n = len(order)
    if n < 2:
        return np.zeros(0, np.int64)
    hs = hashes[order]
    same = np.nonzero(hs[1:] == hs[:-1])[0]
    if len(same) == 0:
        return np.zeros(0, np.int64)
    # walk only the groups of equal hashes (duplicates are rare)
    starts = same[np.r_[True, np.diff(same) > 1]]
    for s in starts:
        e = s + 1
        while e + 1 < n and hs[e + 1] == hs[s]:
            e += 1
        kept: list[int] = []
        for r in order[s : e + 1]:
            if any(abs(int(ts[r]) - int(ts[k])) <= horizon_us for k in kept):
                out.append(int(r))
            else:
                kept.append(int(r))
    return np.asarray(out, np.int64)


def encode_sidecar(hashes: np.ndarray, ts: np.ndarray) -> bytes:
    """The sidecar bytes for a data file's ids (sorted here)."""
    order = np.argsort(hashes, kind="stable")
    h = np.ascontiguousarray(np.asarray(hashes, "<u8")[order])
    t = np.ascontiguousarray(np.asarray(ts, "<i8")[order])
    return _HEADER.pack(MAGIC, len(h)) + h.tobytes() + t.tobytes()


def decode_sidecar(data: bytes, where: str = "sidecar") -> tuple[np.ndarray, np.ndarray]:
    """``(hashes, ts)`` sorted by hash, from :func:`encode_sidecar` bytes."""
    from clickloop.errors import DataError

    if len(data) < _HEADER.size:
        raise DataError(f"{where}: truncated dedupe sidecar ({len(data)} bytes)")
    magic, n = _HEADER.unpack_from(data)
    if magic != MAGIC or len(data) != _HEADER.size + 16 * n:
        raise DataError(
            f"{where}: not a clickloop dedupe sidecar (or a torn one)",
            hint="rebuild it with `clickloop lake compact --rebuild-index`",
        )
    h = np.frombuffer(data, "<u8", count=n, offset=_HEADER.size).astype(np.uint64)
    t = np.frombuffer(data, "<i8", count=n, offset=_HEADER.size + 8 * n).astype(np.int64)
    return h, t
