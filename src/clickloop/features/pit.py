"""The point-in-time kernel: feature values of many (entity, time) queries, vectorised.

Input: one feature set's rows for a group of entities, sorted by (entity, ts,
event order), and queries (entity code, as-of time ``T``). Every value uses
only rows with ``ts < T`` — strictly before, so an event at exactly ``T`` never
leaks into a row stamped ``T``.

No range joins: each aggregate is answered by binary searches over sorted keys
("as-of" lookups) into running totals or tiles, so the cost per query is
O(log n) whatever the entity's volume — heavy users cost the same as light ones:

* count, sum, mean — running totals (prefix sums) looked up at the window's two ends;
* first, last, since_last — the rows at the window's two ends;
* min, max — prefix extremes inside the head tile plus a sparse table over whole
  tiles (a window spans at most ``window / hop`` tiles);
* distinct_count — each row counts from just after its time until its value
  recurs or its tile leaves the window, so a distinct count is a difference of
  two running counts;
* approx_distinct_count — a HyperLogLog estimate whose registers come from the
  same running counts, per rho level (identical to the streaming sketch);
* top_k, histogram — per (entity, value) running counts over the values the
  entity has used before ``T`` (meant for categorical columns).

The window rule (see :mod:`clickloop.features.definition`): ``floor(T - w, hop) <= ts < T``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pyarrow as pa
import xxhash

from clickloop.features.definition import Feature, FeatureSet

INF: Final = np.iinfo(np.int64).max
HLL_P: Final = 12
HLL_M: Final = 1 << HLL_P
HLL_ALPHA: Final = 0.7213 / (1 + 1.079 / HLL_M)
MAX_EXPANSION: Final = 8_000_000  # (query, value) pairs per top-k chunk: bounds memory


@dataclass
class Column:
    """One aggregation input over the rows.

    ``values``: float64 with NaN for null (numbers, booleans as 0/1), or int64
    codes with -1 for null (text; ``dictionary[code]`` is the value, sorted).
    """

    kind: str  # "number" | "string" | "bool"
    values: np.ndarray
    dictionary: pa.Array | None = None

    @property
    def valid(self) -> np.ndarray:
        if self.kind == "string":
            return self.values >= 0
        return ~np.isnan(self.values)


@dataclass
class Rows:
    """A feature set's rows for a group of entities, sorted by (entity, ts, event order)."""

    ent: np.ndarray  # int64 entity codes, non-decreasing
    ts: np.ndarray  # int64 µs since the epoch
    cols: dict[str, Column] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ent)


class Index:
    """Sorted (entity, time) pairs answering "how many rows of entity e before time t".

    Each pair becomes one int64 key, ordered like the pair: ``(e + 1) * span + (t - lo)``
    when the time span allows (the usual case), else with times replaced by their
    rank among the distinct times. Entity -1 (unknown) has no rows.
    """

    def __init__(self, ent: np.ndarray, t: np.ndarray, *, sort: bool = False) -> None:
        if sort:
            order = np.lexsort((t, ent))
            ent, t = ent[order], t[order]
        n_ent = int(ent.max()) + 2 if len(ent) else 1
        self.lo = int(t.min()) - 1 if len(t) else 0
        self.hi = int(t.max()) + 1 if len(t) else 1
        span = self.hi - self.lo + 1
        self.u: np.ndarray | None = None
        if span * (n_ent + 1) < 2**62:
            self.span = np.int64(span)
            self.keys = (ent + 1) * self.span + (t - self.lo)
        else:  # a very long time range: compress times to ranks
            self.u = np.unique(t)
            self.span = np.int64(len(self.u) + 1)
            self.keys = (ent + 1) * self.span + np.searchsorted(self.u, t)

    def subset(self, sel: np.ndarray) -> Index:
        """The index of a subset of the rows (same key space)."""
        out = Index.__new__(Index)
        out.lo, out.hi, out.u, out.span = self.lo, self.hi, self.u, self.span
        out.keys = self.keys[sel]
        return out

    def _key(self, qe: np.ndarray, qt: np.ndarray, side: str) -> tuple[np.ndarray, str]:
        if self.u is None:
            return (qe + 1) * self.span + (np.clip(qt, self.lo, self.hi) - self.lo), side
        rank = np.searchsorted(self.u, qt, side=side)  # type: ignore[call-overload]
        return (qe + 1) * self.span + rank, "left"

    def pos(self, qe: np.ndarray, qt: np.ndarray, *, inclusive: bool = False) -> np.ndarray:
        """Global position of the first row of ``qe`` with time ≥ ``qt`` (> with inclusive)."""
        key, side = self._key(qe, qt, "right" if inclusive else "left")
        return np.searchsorted(self.keys, key, side=side)  # type: ignore[call-overload]

    def start(self, qe: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.keys, (qe + 1) * self.span, side="left")


def floor_to(t: np.ndarray, hop: int) -> np.ndarray:
    return t - np.mod(t, hop)


def compute(fs: FeatureSet, rows: Rows, qe: np.ndarray, qt: np.ndarray) -> dict[str, pa.Array]:
    """Values of every feature of ``fs`` for queries (entity code, as-of µs).

    A query with entity code -1 (an entity never seen) gets the empty-history
    values: 0 for counts and sums, null (or the declared default) otherwise.
    """
    qe = np.asarray(qe, np.int64)
    qt = np.asarray(qt, np.int64)
    qe = np.where(qe >= 0, qe, -1)
    # sorted queries make every binary search walk the keys forward (cache-friendly)
    order = np.lexsort((qt, qe))
    qe, qt = qe[order], qt[order]
    back = pa.array(np.argsort(order))
    all_idx = Index(rows.ent, rows.ts)
    cache: dict[Any, Any] = {"index": all_idx}
    out: dict[str, pa.Array] = {}
    for f in fs.features:
        out[f.name] = _feature(f, rows, all_idx, qe, qt, cache).take(back)
    return out


def _subset(rows: Rows, all_idx: Index, column: str | None, cache: dict[Any, Any]
            ) -> tuple[np.ndarray, Index, np.ndarray | None]:  # fmt: skip
    """Rows where ``column`` is not null: (row positions or all, index, values)."""
    key = ("subset", column)
    if key not in cache:
        if column is None:
            cache[key] = (np.arange(len(rows)), all_idx, None)
        else:
            col = rows.cols[column]
            valid = col.valid
            if valid.all():
                cache[key] = (np.arange(len(rows)), all_idx, col.values)
            else:
                sel = np.nonzero(valid)[0]
                cache[key] = (sel, all_idx.subset(sel), col.values[sel])
    result: tuple[np.ndarray, Index, np.ndarray | None] = cache[key]
    return result


def _ends(f: Feature, idx: Index, qe: np.ndarray, qt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b = idx.pos(qe, qt)
    if f.window is None or f.hop is None:
        return idx.start(qe), b
    return idx.pos(qe, floor_to(qt - f.window, f.hop)), b


def _feature(f: Feature, rows: Rows, all_idx: Index, qe: np.ndarray, qt: np.ndarray,
             cache: dict[Any, Any]) -> pa.Array:  # fmt: skip
    sel, idx, vals = _subset(rows, all_idx, f.input, cache)
    a, b = _ends(f, idx, qe, qt)
    n = b - a
    has = n > 0
    op = f.op
    if op == "count":
        return pa.array(n, pa.int64())
    if op in ("sum", "mean"):
        assert vals is not None
        key = ("prefix", f.input)
        if key not in cache:
            pre = np.zeros(len(vals) + 1, np.longdouble)
            np.cumsum(vals.astype(np.longdouble), out=pre[1:])
            cache[key] = pre
        pre = cache[key]
        total = (pre[b] - pre[a]).astype(np.float64)
        if op == "sum":
            return pa.array(total, pa.float64())
        mean = total / np.where(has, n, 1)
        return _fill(f, pa.array(mean, pa.float64(), mask=~has))
    if op in ("first", "last", "since_last"):
        at = np.where(has, a if op == "first" else b - 1, 0)
        if op == "since_last":
            last_ts = rows.ts[sel][at] if len(sel) else np.zeros(len(qe), np.int64)
            return _fill(f, pa.array((qt - last_ts) / 1e6, pa.float64(), mask=~has))
        assert f.input is not None
        return _fill(f, _take(rows.cols[f.input], sel, at, has))
    if op in ("min", "max"):
        assert vals is not None
        return _fill(f, _extreme(f, rows, sel, idx, vals, qe, qt, a, b, cache))
    if op == "distinct_count":
        codes = _codes(rows.cols[f.input or ""], sel, cache, f.input)
        ent, ts = rows.ent[sel], rows.ts[sel]
        return pa.array(_distinct(ent, ts, codes, f, qe, qt, idx), pa.int64())
    if op == "approx_distinct_count":
        return pa.array(_approx(f, rows, sel, qe, qt, cache), pa.int64())
    if op in ("top_k", "histogram"):
        return _top(f, rows, sel, qe, qt, cache)
    raise ValueError(f"unknown op {op}")


def _fill(f: Feature, arr: pa.Array) -> pa.Array:
    if f.default is None or arr.null_count == 0:
        return arr
    return arr.fill_null(pa.scalar(f.default).cast(arr.type))


def _take(col: Column, sel: np.ndarray, at: np.ndarray, has: np.ndarray) -> pa.Array:
    raw = col.values[sel][at] if len(sel) else np.zeros(len(at), col.values.dtype)
    if col.kind == "string":
        assert col.dictionary is not None
        codes = pa.array(np.where(has, raw, 0), pa.int64(), mask=~has)
        return col.dictionary.take(codes) if len(col.dictionary) else pa.nulls(len(at), pa.string())
    if col.kind == "bool":
        return pa.array(raw == 1.0, pa.bool_(), mask=~has)
    return pa.array(raw, pa.float64(), mask=~has)


def _ranks(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inv = np.unique(vals, return_inverse=True)
    return uniq, inv.astype(np.int64)


def _segmented_prefix_min(r: np.ndarray, starts: np.ndarray, span: int) -> np.ndarray:
    """Running minimum of ``r`` (ints in [0, span)) restarting where ``starts`` is true."""
    seg = np.cumsum(starts) - 1
    shifted = r - seg * np.int64(span)
    return np.minimum.accumulate(shifted) + seg * np.int64(span)


def _extreme(f: Feature, rows: Rows, sel: np.ndarray, idx: Index, vals: np.ndarray,
             qe: np.ndarray, qt: np.ndarray, a: np.ndarray, b: np.ndarray,
             cache: dict[Any, Any]) -> pa.Array:  # fmt: skip
    has = b > a
    if len(vals) == 0:
        return pa.nulls(len(qe), pa.float64())
    uniq, rank = _ranks(vals)
    span = len(uniq)
    r = rank if f.op == "min" else (span - 1 - rank)  # max as a min over reversed ranks
    ent, ts = rows.ent[sel], rows.ts[sel]
    first_of_ent = np.ones(len(ent), bool)
    first_of_ent[1:] = ent[1:] != ent[:-1]
    if f.window is None or f.hop is None:
        pm = _segmented_prefix_min(r, first_of_ent, span)
        best = pm[np.where(has, b - 1, 0)]
    else:
        key = ("tiles", f.input, f.hop, f.op)
        if key not in cache:
            tile = floor_to(ts, f.hop)
            starts = first_of_ent.copy()
            starts[1:] |= tile[1:] != tile[:-1]
            pm = _segmented_prefix_min(r, starts, span)
            tile_id = np.cumsum(starts) - 1
            ends = np.append(np.nonzero(starts)[0][1:], len(r)) - 1
            cache[key] = (pm, tile_id, _sparse_table(pm[ends]))
        pm, tile_id, table = cache[key]
        n_tiles = table.shape[1]
        c = idx.pos(qe, floor_to(qt, f.hop))
        big = np.int64(span)
        head = np.where(b > c, pm[np.where(b > c, b - 1, 0)], big)
        ta = np.where(a < len(r), tile_id[np.minimum(a, len(r) - 1)], n_tiles)
        tc = np.where(c < len(r), tile_id[np.minimum(c, len(r) - 1)], n_tiles)
        full = np.where(tc > ta, _rmq(table, ta, tc), big)
        best = np.minimum(head, full)
    best = np.where(has, best, 0)
    rank_best = best if f.op == "min" else (span - 1 - best)
    return pa.array(uniq[rank_best], pa.float64(), mask=~has)


def _sparse_table(x: np.ndarray) -> np.ndarray:
    n = len(x)
    levels = max(1, int(np.ceil(np.log2(max(n, 1)))) + 1)
    table = np.empty((levels, n), x.dtype)
    table[0] = x
    for j in range(1, levels):
        step = 1 << (j - 1)
        prev = table[j - 1]
        table[j] = np.minimum(prev, prev[np.minimum(np.arange(n) + step, n - 1)])
    return table


def _rmq(table: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Minimum of ``x[lo:hi]`` for each query (hi > lo)."""
    length = np.maximum(hi - lo, 1)
    j = np.floor(np.log2(length)).astype(np.int64)
    j = np.minimum(j, table.shape[0] - 1)
    n = table.shape[1]
    left = table[j, np.minimum(lo, n - 1)]
    right = table[j, np.clip(hi - (np.int64(1) << j), 0, n - 1)]
    return np.minimum(left, right)


def _codes(col: Column, sel: np.ndarray, cache: dict[Any, Any], name: str | None) -> np.ndarray:
    """Integer codes of the (non-null) values of a column, any type."""
    key = ("codes", name)
    if key not in cache:
        v = col.values[sel]
        cache[key] = v.astype(np.int64) if col.kind == "string" else _ranks(v)[1]
    result: np.ndarray = cache[key]
    return result


def _expiry(f: Feature, ts: np.ndarray) -> np.ndarray:
    """When a row stops counting in window ``f`` (the first as-of time excluding it)."""
    if f.window is None or f.hop is None:
        return np.full(len(ts), INF, np.int64)
    return floor_to(ts, f.hop) + f.hop + f.window


def _distinct(
    ent: np.ndarray,
    ts: np.ndarray,
    codes: np.ndarray,
    f: Feature,
    qe: np.ndarray,
    qt: np.ndarray,
    index: Index | None = None,
) -> np.ndarray:
    """Distinct values in the window: rows before ``qt`` minus rows superseded or expired.

    A row stops counting when its value recurs (the later row takes over) or when
    its tile leaves the window, whichever is first.
    """
    if len(ent) == 0:
        return np.zeros(len(qe), np.int64)
    order = np.lexsort((np.arange(len(ent)), codes, ent))
    se, sc, st = ent[order], codes[order], ts[order]
    nxt = np.full(len(order), INF, np.int64)
    same = (se[1:] == se[:-1]) & (sc[1:] == sc[:-1])
    nxt[:-1] = np.where(same, st[1:] + 1, INF)
    end = np.minimum(nxt, _expiry(f, st))
    seen = Index(ent, ts) if index is None else index
    before = seen.pos(qe, qt) - seen.start(qe)
    gone = Index(se, end, sort=True)
    dropped = gone.pos(qe, qt, inclusive=True) - gone.start(qe)
    return before - dropped


def value_hash(kind: str, value: Any) -> int:
    """The 64-bit hash of a value in HyperLogLog sketches (same in batch and streaming)."""
    if kind == "string":
        data = str(value).encode()
    elif kind == "bool":
        data = b"true" if value else b"false"
    else:
        data = np.float64(value + 0.0).tobytes()  # +0.0 folds -0.0 into 0.0
    return xxhash.xxh64_intdigest(data)


def hll_register(h: int) -> tuple[int, int]:
    """(bucket, rho) of a 64-bit hash."""
    bucket = h >> (64 - HLL_P)
    w = (h << HLL_P) & 0xFFFFFFFFFFFFFFFF
    rho = 64 - w.bit_length() + 1 if w else 64 - HLL_P + 1
    return bucket, rho


def _hll_arrays(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = hashes.astype(np.uint64)
    bucket = (h >> np.uint64(64 - HLL_P)).astype(np.int64)
    w = h << np.uint64(HLL_P)
    bits = np.zeros(len(h), np.int64)  # bit length of w
    x = w.copy()
    for shift in (32, 16, 8, 4, 2, 1):
        big = x >= (np.uint64(1) << np.uint64(shift))
        bits += np.where(big, shift, 0)
        x = np.where(big, x >> np.uint64(shift), x)
    bits += (x > 0).astype(np.int64)
    rho = np.where(w == 0, 64 - HLL_P + 1, 64 - bits + 1)
    return bucket, rho


def hll_estimate(levels: np.ndarray) -> np.ndarray:
    """HyperLogLog estimates from per-level register counts.

    ``levels[q, r-1]`` = number of registers whose value is ≥ r. The arithmetic is
    exact up to the final division and logarithm, so batch and streaming agree.
    """
    levels = np.atleast_2d(levels)
    z = np.full(levels.shape[0], float(HLL_M))
    for r in range(levels.shape[1]):
        z -= levels[:, r] * (2.0 ** -(r + 1))
    raw = HLL_ALPHA * HLL_M * HLL_M / z
    zeros = HLL_M - (levels[:, 0] if levels.shape[1] else 0)
    small = (raw <= 2.5 * HLL_M) & (zeros > 0)
    lin = HLL_M * np.log(HLL_M / np.maximum(zeros, 1))
    est = np.where(small, lin, raw)
    return np.rint(est).astype(np.int64)


def _approx(f: Feature, rows: Rows, sel: np.ndarray, qe: np.ndarray, qt: np.ndarray,
            cache: dict[Any, Any]) -> np.ndarray:  # fmt: skip
    col = rows.cols[f.input or ""]
    key = ("hll", f.input)
    if key not in cache:
        if col.kind == "string":
            assert col.dictionary is not None
            dict_hash = np.array(
                [value_hash("string", v) for v in col.dictionary.to_pylist()], np.uint64
            )
            hashes = dict_hash[col.values[sel]] if len(dict_hash) else np.zeros(0, np.uint64)
        else:
            uniq, inv = _ranks(col.values[sel])
            uh = np.array([value_hash(col.kind, v) for v in uniq.tolist()], np.uint64)
            hashes = uh[inv] if len(uh) else np.zeros(0, np.uint64)
        cache[key] = _hll_arrays(hashes)
    bucket, rho = cache[key]
    ent, ts = rows.ent[sel], rows.ts[sel]
    top = int(rho.max()) if len(rho) else 0
    levels = np.zeros((len(qe), max(top, 1)), np.int64)
    for r in range(1, top + 1):
        m = rho >= r
        if not m.any():
            break
        levels[:, r - 1] = _distinct(ent[m], ts[m], bucket[m], f, qe, qt)
    return hll_estimate(levels)


def _top(f: Feature, rows: Rows, sel: np.ndarray, qe: np.ndarray, qt: np.ndarray,
         cache: dict[Any, Any]) -> pa.Array:  # fmt: skip
    col = rows.cols[f.input or ""]
    assert col.dictionary is not None
    key = ("pairs", f.input)
    if key not in cache:
        ent, ts, codes = rows.ent[sel], rows.ts[sel], col.values[sel]
        order = np.lexsort((np.arange(len(ent)), codes, ent))  # by (entity, value, time)
        pe, pc_, pt = ent[order], codes[order], ts[order]
        newpair = np.ones(len(order), bool)
        newpair[1:] = (pe[1:] != pe[:-1]) | (pc_[1:] != pc_[:-1])
        pair = np.cumsum(newpair) - 1
        firsts = np.nonzero(newpair)[0]
        pair_ent, pair_code, pair_first = pe[firsts], pc_[firsts], pt[firsts]
        by_first = np.lexsort((pair_first, pair_ent))  # pairs of an entity, by first use
        cache[key] = (
            Index(pair_ent[by_first], pair_first[by_first]),
            by_first,
            pair_code,
            Index(pair, pt),
        )
    pairs_idx, by_first, pair_code, rows_idx = cache[key]
    if len(qe) == 0:
        empty = col.dictionary.take(pa.array([], pa.int64()))
        if f.op == "top_k":
            return pa.ListArray.from_arrays(pa.array([0], pa.int32()), empty)
        return pa.MapArray.from_arrays(pa.array([0], pa.int32()), empty, pa.array([], pa.int64()))
    used = pairs_idx.pos(qe, qt) - pairs_idx.start(qe)
    first = pairs_idx.start(qe)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    lo = 0
    csum = np.cumsum(used)
    while lo < len(qe):
        base = csum[lo - 1] if lo else 0
        hi = int(np.searchsorted(csum, base + MAX_EXPANSION, side="right"))
        hi = max(hi, lo + 1)
        parts.append(_top_chunk(f, lo, hi, used, first, by_first, pair_code, rows_idx, qt))
        lo = hi
    q = np.concatenate([p[0] for p in parts])
    codes = np.concatenate([p[1] for p in parts])
    counts = np.concatenate([p[2] for p in parts])
    offsets = np.zeros(len(qe) + 1, np.int32)
    np.cumsum(np.bincount(q, minlength=len(qe)), out=offsets[1:])
    values = col.dictionary.take(pa.array(codes, pa.int64()))
    if f.op == "top_k":
        return pa.ListArray.from_arrays(pa.array(offsets), values)
    return pa.MapArray.from_arrays(pa.array(offsets), values, pa.array(counts, pa.int64()))


def _top_chunk(f: Feature, lo: int, hi: int, used: np.ndarray, first: np.ndarray,
               by_first: np.ndarray, pair_code: np.ndarray, rows_idx: Index,
               qt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    u = used[lo:hi]
    total = int(u.sum())
    q = np.repeat(np.arange(lo, hi), u)
    within = np.arange(total) - np.repeat(np.cumsum(u) - u, u)
    pair = by_first[np.repeat(first[lo:hi], u) + within]
    t = qt[q]
    b = rows_idx.pos(pair, t)
    if f.window is None or f.hop is None:
        a = rows_idx.start(pair)
    else:
        a = rows_idx.pos(pair, floor_to(t - f.window, f.hop))
    count = b - a
    keep = count > 0
    q, pair, count = q[keep], pair[keep], count[keep]
    code = pair_code[pair]
    order = np.lexsort((code, -count, q))
    q, code, count = q[order], code[order], count[order]
    start = np.searchsorted(q, q, side="left")
    keep = (np.arange(len(q)) - start) < f.k
    return q[keep], code[keep], count[keep]
