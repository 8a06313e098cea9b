"""Partial aggregates of many rows at once: the vectorised half of the streaming engine.

A micro-batch is sorted by (entity, ts, event_id) and cut into groups — one per
(entity, tile) or per entity — and each group's partial aggregate
(:class:`~clickloop.features.state.Agg`) is computed with numpy reductions. The
engine then merges one partial per group into its state instead of touching its
state once per event: a visitor's burst of impressions costs one update.

>>> aggs = group_partials(Needs(count=True), "rows", groups, ts, eids, None)  # doctest: +SKIP
>>> aggs[0].n
12
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clickloop.features.pit import hll_estimate, hll_register, value_hash

if TYPE_CHECKING:
    from clickloop.features.definition import Feature
    from clickloop.features.state import Agg, Needs

SCALE = 1074


def rounded(s: int) -> float:
    """An exact sum (integer number of 2**-1074) as the nearest float."""
    return s / (1 << SCALE)  # int / int: correctly rounded


def _exact_all(values: list[float]) -> np.ndarray:
    """Each float as an exact integer number of 2**-1074 (object array of Python ints)."""
    out = np.empty(len(values), object)
    for k, x in enumerate(values):
        num, den = x.as_integer_ratio()
        out[k] = num << (SCALE - (den.bit_length() - 1))
    return out


def group_partials(
    needs: Needs,
    kind: str,
    starts: np.ndarray,
    ts: np.ndarray,
    eids: pa.Array,
    values: pa.Array | None,
) -> list[Agg]:
    """One partial per group of rows (rows sorted, ``starts``: each group's first row).

    ``values`` is the input column in the same order (None for the event itself,
    no nulls otherwise); ``eids`` the event ids (only read for first/last).
    """
    from clickloop.features.state import Agg

    n_rows = len(ts)
    ends = np.append(starts[1:], n_rows)
    counts = (ends - starts).tolist()
    out = [Agg(needs) for _ in range(len(starts))]
    for a, c in zip(out, counts, strict=True):
        a.n = c
    if values is None or n_rows == 0:
        pyvals: list[Any] = []
    else:
        pyvals = values.to_pylist()
    if needs.sum:
        sums = np.add.reduceat(_exact_all(pyvals), starts).tolist() if n_rows else []
        for a, s in zip(out, sums, strict=True):
            a.s = s
    if needs.min or needs.max:
        arr = np.asarray(pyvals, np.float64)
        if needs.min:
            for a, m in zip(out, np.minimum.reduceat(arr, starts).tolist(), strict=True):
                a.mn = m
        if needs.max:
            for a, m in zip(out, np.maximum.reduceat(arr, starts).tolist(), strict=True):
                a.mx = m
    if needs.first or needs.last:
        firsts, lasts = starts.tolist(), (ends - 1).tolist()
        pick = sorted(set(firsts) | set(lasts))
        ids = eids.take(pa.array(pick)).to_pylist()
        eid_at = dict(zip(pick, ids, strict=True))
        tsl = ts.tolist()
        for a, f, last in zip(out, firsts, lasts, strict=True):
            if needs.first:
                a.first = (tsl[f], eid_at[f], pyvals[f] if pyvals else None)
            if needs.last:
                a.last = (tsl[last], eid_at[last], pyvals[last] if pyvals else None)
    if needs.ms:
        _multisets(out, starts, values)
    if needs.hll:
        group_of = np.repeat(np.arange(len(starts)), ends - starts).tolist()
        for g, v in zip(group_of, pyvals, strict=True):
            b, rho = hll_register(value_hash(kind, v))
            regs = out[g].hll
            assert regs is not None
            if rho > regs.get(b, 0):
                regs[b] = rho
    return out


def _multisets(out: list[Agg], starts: np.ndarray, values: pa.Array | None) -> None:
    """Value → count per group, from unique (group, value) pairs."""
    assert values is not None
    n_rows = len(values)
    if n_rows == 0:
        return
    group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n_rows)))
    enc = pc.dictionary_encode(values)
    codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False), np.int64)
    names = enc.dictionary.to_pylist()
    key = group * np.int64(len(names) + 1) + codes
    uniq, cnt = np.unique(key, return_counts=True)
    width = np.int64(len(names) + 1)
    for k, c in zip(uniq.tolist(), cnt.tolist(), strict=True):
        ms = out[k // width].ms
        assert ms is not None
        ms[names[k % width]] = c


def feature_value(f: Feature, acc: Agg | None, clock: int) -> Any:
    """A feature's value from its accumulator (the batch kernel's empty-history rules)."""
    op = f.op
    n = acc.n if acc is not None else 0
    if op == "count":
        return n
    if op == "sum":
        return rounded(acc.s) if acc is not None and acc.s is not None else 0.0
    if op in ("distinct_count", "top_k", "histogram"):
        ms = acc.ms if acc is not None and acc.ms is not None else {}
        if op == "distinct_count":
            return len(ms)
        top = sorted(ms.items(), key=lambda kv: (-kv[1], kv[0]))[: f.k]
        return [k for k, _ in top] if op == "top_k" else top
    if op == "approx_distinct_count":
        regs = acc.hll if acc is not None and acc.hll else {}
        if not regs:
            return 0
        counts = np.bincount(np.fromiter(regs.values(), np.int64))
        at_least = counts[::-1].cumsum()[::-1][1:]  # registers with value ≥ r, r = 1…
        return int(hll_estimate(at_least[None, :])[0])
    value: Any = None
    if acc is not None and n:
        if op == "mean":
            assert acc.s is not None
            value = rounded(acc.s) / n
        elif op == "min":
            value = acc.mn
        elif op == "max":
            value = acc.mx
        elif op == "first" and acc.first is not None:
            value = acc.first[2]
        elif op == "last" and acc.last is not None:
            value = acc.last[2]
        elif op == "since_last" and acc.last is not None:
            value = (clock - acc.last[0]) / 1e6
    if value is None:
        return f.default
    return value
