"""Incremental aggregates for the streaming engine: tiles, running windows, expiry.

Per entity and aggregation input, every event goes into one *tile* (partial
aggregate) per hop size and into the running accumulator of every window that
still covers its tile. When the stream's clock moves past ``tile + hop + window``
the tile leaves that window: its partial is subtracted (counts, sums, value
multisets) or the window is recomputed from its remaining tiles (min, max,
first, HyperLogLog registers). A tile no window needs any more is dropped.

The window rule and every formula are those of the batch kernel
(:mod:`clickloop.features.pit`), so values agree: ``floor(T - w, hop) <= ts < T``.
Sums are kept exactly (as integers in units of 2**-1074) and rounded once when
read, so they never drift however many events come and go.

>>> st = SetState(define("c", entity="user_id", aggregate=[{"op": "count", "windows": ["1h"]}]))
>>> st.add("u1", ts=10, eid="e1", values=[])
>>> st.advance(11); st.values("u1")
{'c__count_1h': 1}
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from clickloop.features.definition import Feature, FeatureSet
from clickloop.features.pit import hll_estimate, hll_register, value_hash

SCALE: Final = 1074  # every float is an integer multiple of 2**-1074


def exact(x: float) -> int:
    """``x`` as an integer number of 2**-1074 (exact)."""
    num, den = float(x).as_integer_ratio()
    return num << (SCALE - (den.bit_length() - 1))


def rounded(s: int) -> float:
    return s / (1 << SCALE)  # int / int: correctly rounded


@dataclass(frozen=True)
class Needs:
    """What an input's partial aggregates must keep."""

    count: bool = False
    sum: bool = False
    min: bool = False
    max: bool = False
    first: bool = False
    last: bool = False
    ms: bool = False
    hll: bool = False


@dataclass
class InputPlan:
    """One aggregation input of a set: which windows and what to keep."""

    key: str | None
    kind: str  # number | string | bool | rows
    needs: Needs
    col: int = -1  # position of the input in FeatureSet.inputs (-1: the event itself)
    windows: list[tuple[int, int]] = field(default_factory=list)  # (window µs, hop µs)
    lifetime: bool = False

    @property
    def hops(self) -> list[int]:
        return sorted({h for _, h in self.windows})

    def longest(self, hop: int) -> int:
        """The longest window tiled by ``hop`` (its tiles live that long)."""
        return max(w for w, h in self.windows if h == hop)


class Agg:
    """A partial aggregate (a tile) or a running window — the same shape."""

    __slots__ = ("first", "hll", "last", "mn", "ms", "mx", "n", "s")

    def __init__(self, needs: Needs) -> None:
        self.n = 0
        self.s = 0 if needs.sum else None
        self.mn: float | None = None
        self.mx: float | None = None
        self.first: tuple[int, str, Any] | None = None
        self.last: tuple[int, str, Any] | None = None
        self.ms: dict[Any, int] | None = {} if needs.ms else None
        self.hll: dict[int, int] | None = {} if needs.hll else None

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.n, self.s, self.mn, self.mx, self.first, self.last, self.ms, self.hll)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.n, self.s, self.mn, self.mx, self.first, self.last, self.ms, self.hll = state

    def add(self, needs: Needs, ts: int, eid: str, v: Any, ex: int, reg: tuple[int, int] | None
            ) -> None:  # fmt: skip
        self.n += 1
        if self.s is not None:
            self.s += ex
        if needs.min and (self.mn is None or v < self.mn):
            self.mn = v
        if needs.max and (self.mx is None or v > self.mx):
            self.mx = v
        if needs.first:
            key = (ts, eid, v)
            if self.first is None or key[:2] < self.first[:2]:
                self.first = key
        if needs.last:
            key = (ts, eid, v)
            if self.last is None or key[:2] > self.last[:2]:
                self.last = key
        if self.ms is not None:
            self.ms[v] = self.ms.get(v, 0) + 1
        if self.hll is not None and reg is not None:
            b, rho = reg
            if rho > self.hll.get(b, 0):
                self.hll[b] = rho

    def merge(self, o: Agg) -> None:
        self.n += o.n
        if self.s is not None and o.s is not None:
            self.s += o.s
        if o.mn is not None and (self.mn is None or o.mn < self.mn):
            self.mn = o.mn
        if o.mx is not None and (self.mx is None or o.mx > self.mx):
            self.mx = o.mx
        if o.first is not None and (self.first is None or o.first[:2] < self.first[:2]):
            self.first = o.first
        if o.last is not None and (self.last is None or o.last[:2] > self.last[:2]):
            self.last = o.last
        if self.ms is not None and o.ms:
            for k, c in o.ms.items():
                self.ms[k] = self.ms.get(k, 0) + c
        if self.hll is not None and o.hll:
            for b, rho in o.hll.items():
                if rho > self.hll.get(b, 0):
                    self.hll[b] = rho

    def subtract(self, o: Agg) -> bool:
        """Remove a tile's contribution; True if a non-invertible part needs recomputing."""
        self.n -= o.n
        if self.s is not None and o.s is not None:
            self.s -= o.s
        if self.ms is not None and o.ms:
            ms = self.ms
            for k, c in o.ms.items():
                left = ms[k] - c
                if left:
                    ms[k] = left
                else:
                    del ms[k]
        return bool(
            (o.mn is not None and o.mn == self.mn)
            or (o.mx is not None and o.mx == self.mx)
            or (o.first is not None and o.first == self.first)
            or (o.last is not None and o.last == self.last)
            or (self.hll is not None and o.hll)
        )


Adder = Callable[[Agg, int, str, Any, int, "tuple[int, int] | None"], None]


def adder(needs: Needs) -> Adder:
    """The cheapest way to add one value to an aggregate with these needs (the hot path)."""
    if needs == Needs(count=True):

        def count(a: Agg, ts: int, eid: str, v: Any, ex: int, reg: Any) -> None:
            a.n += 1

        return count
    if needs == Needs(count=True, last=True):

        def last(a: Agg, ts: int, eid: str, v: Any, ex: int, reg: Any) -> None:
            a.n += 1
            cur = a.last
            if cur is None or (ts, eid) > cur[:2]:
                a.last = (ts, eid, v)

        return last
    if needs == Needs(count=True, ms=True):

        def multiset(a: Agg, ts: int, eid: str, v: Any, ex: int, reg: Any) -> None:
            a.n += 1
            ms = a.ms
            assert ms is not None
            ms[v] = ms.get(v, 0) + 1

        return multiset
    if needs == Needs(count=True, sum=True):

        def total(a: Agg, ts: int, eid: str, v: Any, ex: int, reg: Any) -> None:
            a.n += 1
            a.s += ex  # type: ignore[operator]

        return total

    def general(a: Agg, ts: int, eid: str, v: Any, ex: int, reg: Any) -> None:
        a.add(needs, ts, eid, v, ex, reg)

    return general


class EntityState:
    """All running state of one entity in one feature set."""

    __slots__ = ("life", "tiles", "win")

    def __init__(self, plans: list[InputPlan]) -> None:
        # tiles[i][hop][tile_start] → partial; win[i][j] → window j of input i
        self.tiles: list[dict[int, dict[int, Agg]]] = [{h: {} for h in p.hops} for p in plans]
        self.win: list[list[Agg]] = [[Agg(p.needs) for _ in p.windows] for p in plans]
        self.life: list[Agg | None] = [Agg(p.needs) if p.lifetime else None for p in plans]

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.tiles, self.win, self.life)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.tiles, self.win, self.life = state


def plan_inputs(fs: FeatureSet) -> list[InputPlan]:
    """Group a set's features by input: windows, lifetime, and what partials to keep."""
    plans: dict[str | None, InputPlan] = {}
    needs: dict[str | None, dict[str, bool]] = {}
    kinds = {k: node.type for k, node in fs.inputs.items()}
    cols = {k: i for i, k in enumerate(fs.inputs)}
    for f in fs.features:
        key = f.input
        if key not in plans:
            plans[key] = InputPlan(key, kinds.get(key or "", "rows"), Needs(),
                                   cols.get(key or "", -1))  # fmt: skip
            needs[key] = {}
        p = plans[key]
        nd = needs[key]
        nd["count"] = True
        if f.op in ("sum", "mean"):
            nd["sum"] = True
        if f.op in ("min", "max"):
            nd[f.op] = True
        if f.op in ("first",):
            nd["first"] = True
        if f.op in ("last", "since_last"):
            nd["last"] = True
        if f.op in ("distinct_count", "top_k", "histogram"):
            nd["ms"] = True
        if f.op == "approx_distinct_count":
            nd["hll"] = True
        if f.window is None:
            p.lifetime = True
        elif (f.window, f.hop or 1) not in p.windows:
            p.windows.append((f.window, f.hop or 1))
    for key, p in plans.items():
        p.needs = Needs(**needs[key])
        p.windows.sort()
    return list(plans.values())


class SetState:
    """Streaming state of one feature set (see the module docstring).

    ``add`` events in any order (late ones included), ``advance`` the clock to an
    as-of time, read ``values`` — equal to the batch engine's point-in-time values
    at that time over the same events.
    """

    def __init__(self, fs: FeatureSet) -> None:
        self.fs = fs
        self.plans = plan_inputs(fs)
        self.entities: dict[str, EntityState] = {}
        self.clock = -(2**62)  # as-of time (µs): values cover events with ts < clock
        self._heap: list[tuple[int, int, str, int, int, int]] = []
        self._seq = itertools.count()
        self.dirty: set[str] = set()  # entities whose values changed since the last emit
        self.changed: set[str] = set()  # entities to persist at the next checkpoint
        self._adders = [adder(p.needs) for p in self.plans]
        self._by_hop = [
            {h: [(w, j) for j, (w, hh) in enumerate(p.windows) if hh == h] for h in p.hops}
            for p in self.plans
        ]
        self._feature_slot = {
            f.name: self._slot(f) for f in fs.features
        }  # feature → (input, window index or -1 for lifetime)

    def _slot(self, f: Feature) -> tuple[int, int]:
        for i, p in enumerate(self.plans):
            if p.key == f.input:
                if f.window is None:
                    return i, -1
                return i, p.windows.index((f.window, f.hop or 1))
        raise KeyError(f.name)

    # -- events ------------------------------------------------------------------------------

    def add(self, entity: str, *, ts: int, eid: str, values: list[Any]) -> None:
        """Apply one event (``values``: one per entry of ``FeatureSet.inputs``).

        The clock is not moved: call :meth:`advance` (the engine moves it to the
        newest event time + 1 µs before applying an event).
        """
        es = self.entities.get(entity)
        if es is None:
            es = self.entities[entity] = EntityState(self.plans)
        clock = self.clock
        for i, p in enumerate(self.plans):
            v: Any = None
            if p.col >= 0:
                v = values[p.col]
                if v is None:
                    continue
            needs = p.needs
            add = self._adders[i]
            ex = exact(v) if needs.sum else 0
            reg = hll_register(value_hash(p.kind, v)) if needs.hll else None
            tiles = es.tiles[i]
            for hop, by_start in tiles.items():
                start = ts - ts % hop
                part = by_start.get(start)
                if part is None:
                    expiries = [(w, j) for w, j in self._by_hop[i][hop] if start + hop + w > clock]
                    if not expiries:
                        continue  # already outside every window of this hop
                    part = by_start[start] = Agg(needs)
                    for w, j in expiries:
                        heapq.heappush(
                            self._heap, (start + hop + w, next(self._seq), entity, i, j, start)
                        )
                add(part, ts, eid, v, ex, reg)
            win = es.win[i]
            for j, (w, hop) in enumerate(p.windows):
                if ts - ts % hop + hop + w > clock:
                    add(win[j], ts, eid, v, ex, reg)
            life = es.life[i]
            if life is not None:
                add(life, ts, eid, v, ex, reg)
        self.dirty.add(entity)
        self.changed.add(entity)

    def advance(self, clock: int) -> int:
        """Move the as-of time forward, expiring tiles; return tiles expired."""
        if clock <= self.clock:
            return 0
        self.clock = clock
        heap = self._heap
        redo: set[tuple[str, int, int]] = set()
        n = 0
        while heap and heap[0][0] <= clock:
            _, _, entity, i, j, start = heapq.heappop(heap)
            es = self.entities.get(entity)
            if es is None:
                continue
            p = self.plans[i]
            w, hop = p.windows[j]
            part = es.tiles[i][hop].get(start)
            if part is None:
                continue
            if es.win[i][j].subtract(part):
                redo.add((entity, i, j))
            if w == p.longest(hop):
                del es.tiles[i][hop][start]
            self.dirty.add(entity)
            self.changed.add(entity)
            n += 1
        for entity, i, j in redo:
            self._recompute(entity, i, j)
        return n

    def _recompute(self, entity: str, i: int, j: int) -> None:
        es = self.entities[entity]
        p = self.plans[i]
        w, hop = p.windows[j]
        old = es.win[i][j]
        fresh = Agg(p.needs)
        lo = (self.clock - w) - (self.clock - w) % hop
        for start, part in es.tiles[i][hop].items():
            if start >= lo:
                fresh.merge(part)
        # counts, sums and multisets were kept exactly by subtraction; take the rest
        fresh.n, fresh.s, fresh.ms = old.n, old.s, old.ms
        es.win[i][j] = fresh

    # -- values -------------------------------------------------------------------------------

    def values(self, entity: str) -> dict[str, Any]:
        """Every feature of ``entity`` as of :attr:`clock` (empty history if unknown)."""
        es = self.entities.get(entity)
        out: dict[str, Any] = {}
        for f in self.fs.features:
            i, j = self._feature_slot[f.name]
            acc: Agg | None = None
            if es is not None:
                acc = es.life[i] if j < 0 else es.win[i][j]
            out[f.name] = feature_value(f, acc, self.clock)
        return out

    def pending(self) -> int:
        """Expiry timers waiting (for metrics)."""
        return len(self._heap)

    def rebuild_timers(self) -> None:
        """Recreate expiry timers from the tiles (after loading persisted state)."""
        self._heap = []
        for entity, es in self.entities.items():
            for i, p in enumerate(self.plans):
                for j, (w, hop) in enumerate(p.windows):
                    for start in es.tiles[i][hop]:
                        if start + hop + w > self.clock:
                            self._heap.append((start + hop + w, next(self._seq), entity, i, j,
                                               start))  # fmt: skip
        heapq.heapify(self._heap)


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
