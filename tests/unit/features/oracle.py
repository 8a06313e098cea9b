"""A deliberately naive reference: feature values by scanning every row for every query.

Used to check the vectorised kernel and the streaming state. Rows are dicts
with ``entity``, ``ts`` (µs), ``eid`` (tie-break order) and input values keyed
like ``FeatureSet.inputs``.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from clickloop.features.definition import Feature, FeatureSet
from clickloop.features.pit import hll_estimate, hll_register, value_hash


def in_window(f: Feature, ts: int, t: int) -> bool:
    if ts >= t:
        return False
    if f.window is None or f.hop is None:
        return True
    start = (t - f.window) - ((t - f.window) % f.hop)
    return ts >= start


def value(
    f: Feature,
    rows: list[dict[str, Any]],
    entity: str | None,
    t: int,
    kinds: dict[str, str],
    *,
    grouped: bool = False,
) -> Any:
    """The value of ``f`` as of ``t``; ``rows`` are all rows, or (grouped) just the entity's."""
    mine = rows if grouped else [r for r in rows if r["entity"] == entity]
    mine = sorted(mine, key=lambda r: (r["ts"], r["eid"]))
    if f.input is not None:
        mine = [r for r in mine if r.get(f.input) is not None]
    win = [r for r in mine if in_window(f, r["ts"], t)]
    vals = [r[f.input] for r in win] if f.input is not None else []
    op = f.op
    if op == "count":
        return len(win)
    if op == "sum":
        return math.fsum(vals)
    if op == "mean":
        return _d(f, math.fsum(vals) / len(vals) if vals else None)
    if op == "min":
        return _d(f, min(vals) if vals else None)
    if op == "max":
        return _d(f, max(vals) if vals else None)
    if op == "first":
        return _d(f, vals[0] if vals else None)
    if op == "last":
        return _d(f, vals[-1] if vals else None)
    if op == "since_last":
        return _d(f, (t - win[-1]["ts"]) / 1e6 if win else None)
    if op == "distinct_count":
        return len(set(vals))
    if op == "approx_distinct_count":
        regs: dict[int, int] = {}
        for v in set(vals):
            b, rho = hll_register(value_hash(kinds[f.input or ""], v))
            regs[b] = max(regs.get(b, 0), rho)
        top = max(regs.values(), default=1)
        levels = np.array([[sum(1 for x in regs.values() if x >= r) for r in range(1, top + 1)]])
        return int(hll_estimate(levels)[0])
    c = Counter(vals)
    top = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[: f.k]
    if op == "top_k":
        return [k for k, _ in top]
    if op == "histogram":
        return list(top)
    raise ValueError(op)


def _d(f: Feature, v: Any) -> Any:
    return f.default if v is None and f.default is not None else v


def expected(
    fs: FeatureSet,
    rows: list[dict[str, Any]],
    queries: list[tuple[str | None, int]],
    kinds: dict[str, str],
) -> list[dict[str, Any]]:
    by: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["entity"], []).append(r)
    return [
        {f.name: value(f, by.get(e, []), e, t, kinds, grouped=True) for f in fs.features}
        for e, t in queries
    ]


def kinds_of(fs: FeatureSet) -> dict[str, str]:
    return {k: node.type for k, node in fs.inputs.items()}


def rows_of(fs: FeatureSet, prepared: Any) -> list[dict[str, Any]]:
    """Oracle rows from a :func:`clickloop.features.prepare.prepare` table."""
    keys = list(fs.inputs)
    out = []
    for r in prepared.to_pylist():
        row = {"entity": r["entity"], "ts": r["ts"], "eid": r["event_id"]}
        for i, k in enumerate(keys):
            row[k] = r[f"c{i}"]
        out.append(row)
    return out


def same(a: Any, b: Any) -> bool:
    """Equal, with floats compared to 1e-9 relative (sums are rounded differently)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b
