"""Discovery: mine URL templates per host from traffic.

For each host, distinct normalised paths are grouped by their number of segments and
split position by position, left to right. At each position the values seen are
sorted into *literals* (a constant of the template: ``items``, ``search``) and one
*variable* (a field: an id, a category code, a slug…):

* values that look like identifiers (long numbers, hex, UUIDs, mixed tokens) are
  always variable — no template is a constant of an id;
* the other values are compared by what follows them: their *signature* is, for each
  later position, its constant or the shape of its values (and for short word lists,
  the words), plus the query parameters they carry. Values whose signatures agree
  are instances of one variable (``/fashion/<slug>``, ``/sport/<slug>`` →
  ``/:section/:slug``); a value whose continuation differs is a literal route
  (``/c/<category name>`` next to ``/brand/<slug>``);
* one-segment paths stay literal routes (``/search``, ``/cart``) unless there are
  more than ``max_category_values`` of them; rare values join the variable when
  there is one.

Then, bottom-up, templates that differ only by one literal that is not a word
(``…/winvn.gif`` and ``…/bluemarb.gif``) become one template with a variable there.

Each variable then gets a kind (:func:`~clickloop.urls.shapes.infer_kind`) and a name
from its context (``/items/:item_category/:item_id``, ``/news/page/:page``); query
parameters present on enough of a template's URLs become fields too (tracking
parameters never do). Templates seen too rarely are left out.

>>> kb = learn(pa.array(urls))                        # doctest: +SKIP
>>> kb.hosts["shop.example.com"].templates[0].pattern  # doctest: +SKIP
'/items/:item_category/:item_id'
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from clickloop.urls.columnar import as_string_array
from clickloop.urls.kbfile import KbField, KbHost, KbQueryField, KbTemplate, KnowledgeFile
from clickloop.urls.merge import merge_knowledge
from clickloop.urls.parse import decode_segment, registrable_domain, try_parse_url
from clickloop.urls.shapes import (
    infer_kind,
    looks_like_id,
    path_field_name,
    query_field_name,
    sanitize,
    shape,
    unique_names,
)
from clickloop.urls.templates import Template, build_path_pattern

log = logging.getLogger(__name__)

MIN_STRONG_ROWS: Final = 3  # distinct paths behind a value before its signature is trusted
MIN_STRONG_WEIGHT: Final = 10  # … or this many URLs
SMALL_SET: Final = 16  # word lists up to this size are compared value by value
QUERY_SHARE_GAP: Final = 0.5  # a parameter on ≥ this much more of one value's URLs: a route
_PARAM_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-\[\]]{0,63}$")


@dataclass
class LearnOptions:
    """Knobs of discovery (the defaults suit most sites)."""

    min_urls_per_host: int = 200
    max_category_values: int = 64
    min_template_urls: int = 5
    min_template_share: float = 0.0002
    min_param_share: float = 0.01
    tracking_params: Sequence[str] = ()


class UrlCounts:
    """Distinct URLs and how often each was seen, accumulated batch by batch.

    Memory is bounded by the number of distinct URLs, not by the number of rows.

    >>> counts = UrlCounts(limit=1_000_000)
    >>> for batch in batches:                     # doctest: +SKIP
    ...     counts.add(batch)
    >>> kb = learn(counts)                         # doctest: +SKIP
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.rows = 0
        self._parts: list[pa.Table] = []
        self._pending = 0

    def add(self, urls: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> int:
        """Count a batch; return how many rows were taken (fewer once ``limit`` is reached)."""
        arr = as_string_array(urls)
        if isinstance(arr, pa.DictionaryArray):
            arr = arr.cast(pa.string())
        if self.limit is not None:
            arr = arr.slice(0, max(0, self.limit - self.rows))
        if not len(arr):
            return 0
        self.rows += len(arr)
        vc = pc.value_counts(arr.drop_null())
        self._parts.append(pa.table({"url": vc.field("values"), "n": vc.field("counts")}))
        self._pending += len(vc)
        if self._pending > 2_000_000:
            self._compact()
        return len(arr)

    @property
    def full(self) -> bool:
        return self.limit is not None and self.rows >= self.limit

    def _compact(self) -> None:
        if len(self._parts) > 1:
            t = pa.concat_tables(self._parts).group_by("url").aggregate([("n", "sum")])
            self._parts = [t.rename_columns(["url", "n"])]
        self._pending = sum(len(p) for p in self._parts)

    def table(self) -> pa.Table:
        """``url`` (distinct) and ``n`` (times seen)."""
        self._compact()
        if not self._parts:
            return pa.table({"url": pa.array([], pa.string()), "n": pa.array([], pa.int64())})
        return self._parts[0]


@dataclass
class _Host:
    """What was seen on one host, per distinct normalised path."""

    host: str
    index: dict[str, int] = field(default_factory=dict)
    segs: list[tuple[str, ...]] = field(default_factory=list)
    weight: list[int] = field(default_factory=list)
    qnames: list[Counter[str]] = field(default_factory=list)
    qvalues: dict[tuple[int, str], Counter[str]] = field(default_factory=dict)
    tracking: Counter[str] = field(default_factory=Counter)
    total: int = 0

    def add(self, segs: tuple[str, ...], path: str, n: int, query: Iterable[Any]) -> None:
        r = self.index.get(path)
        if r is None:
            r = self.index[path] = len(self.segs)
            self.segs.append(segs)
            self.weight.append(0)
            self.qnames.append(Counter())
        self.weight[r] += n
        self.total += n
        seen: set[str] = set()
        for name, value in query:
            if name in seen:
                continue
            seen.add(name)
            self.qnames[r][name] += n
            vals = self.qvalues.get((r, name))
            if vals is None:
                vals = self.qvalues[(r, name)] = Counter()
            vals["" if value is None else value] += n


def learn(
    urls: pa.Array | pa.ChunkedArray | Sequence[str | None] | UrlCounts,
    *,
    options: LearnOptions | None = None,
    previous: KnowledgeFile | None = None,
    declared: Sequence[Template] = (),
    progress: Callable[[int], None] | None = None,
) -> KnowledgeFile:
    """Learn a knowledge base from URLs (merged into ``previous``, keeping people's edits).

    ``declared`` rules win: a learned template they already describe is left out.
    """
    opts = options or LearnOptions()
    counts = urls if isinstance(urls, UrlCounts) else _count(urls)
    table = counts.table()
    hosts = _collect(table, frozenset(p.lower() for p in opts.tracking_params), progress)
    learned: dict[str, KbHost] = {}
    skipped: dict[str, int] = {}
    for name in sorted(hosts):
        data = hosts[name]
        if data.total < opts.min_urls_per_host:
            skipped[name] = data.total
            continue
        learned[name] = HostLearner(data, opts).learn()
        _drop_declared(learned[name], name, declared)
    if skipped:
        log.info(
            "%d hosts had fewer than %d URLs and were not learned",
            len(skipped),
            opts.min_urls_per_host,
        )
    kb = KnowledgeFile(
        learned_at=datetime.now(UTC).replace(microsecond=0).isoformat(),
        learned_from={
            "urls": counts.rows,
            "distinct_urls": table.num_rows,
            "hosts": len(learned),
            "hosts_too_small": len(skipped),
        },
        hosts=learned,
    )
    return merge_knowledge(kb, previous)


def _count(urls: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> UrlCounts:
    c = UrlCounts()
    c.add(urls)
    return c


def _collect(
    table: pa.Table, tracking: frozenset[str], progress: Callable[[int], None] | None
) -> dict[str, _Host]:
    hosts: dict[str, _Host] = {}
    urls = table.column("url").to_pylist()
    ns = table.column("n").to_pylist()
    for i, (url, n) in enumerate(zip(urls, ns, strict=True)):
        p = try_parse_url(url, tracking)
        if p is not None:
            h = hosts.get(p.host)
            if h is None:
                h = hosts[p.host] = _Host(p.host)
            h.add(p.segments, p.path, n, p.query)
            for name, _ in p.tracking:
                h.tracking[name] += n
        if progress is not None and i % 10_000 == 9_999:
            progress(10_000)
    return hosts


# per later position: ("c", constant) or ("v", shape, small word set); then the query
# parameters carried by at least 5% of the URLs, with their share
Signature = tuple[tuple[tuple[Any, ...], ...], tuple[tuple[str, float], ...]]


class HostLearner:
    """Templates of one host (see the module docstring for the method)."""

    def __init__(self, data: _Host, opts: LearnOptions) -> None:
        self.d = data
        self.opts = opts
        self._decoded: dict[str, str] = {}

    def text(self, segment: str) -> str:
        t = self._decoded.get(segment)
        if t is None:
            t = self._decoded[segment] = decode_segment(segment)
        return t

    # -- splitting ---------------------------------------------------------------------------

    def learn(self) -> KbHost:
        by_depth: dict[int, list[int]] = defaultdict(list)
        for r, s in enumerate(self.d.segs):
            by_depth[len(s)].append(r)
        found: list[tuple[tuple[str | None, ...], list[int]]] = []
        for depth in sorted(by_depth):
            self._split(by_depth[depth], 0, depth, [], found)
        return self._describe(self._generalize(found))

    def _generalize(
        self, found: list[tuple[tuple[str | None, ...], list[int]]]
    ) -> list[tuple[tuple[str | None, ...], list[int]]]:
        """Bottom-up: templates that differ only by one literal that is not a word
        (``…/winvn.gif`` next to ``…/bluemarb.gif``, ``…/51-l/…`` next to ``…/:id/…``)
        are one template with a variable there."""
        templates = {slots: list(rows) for slots, rows in found}
        changed = True
        while changed:
            changed = False
            groups: dict[tuple[int, tuple[str | None, ...]], list[tuple[str | None, ...]]] = {}
            for slots in templates:
                for i, lit in enumerate(slots):
                    if lit is not None and shape(self.text(lit)) not in ("word", "empty"):
                        key = (i, (*slots[:i], None, *slots[i + 1 :]))
                        groups.setdefault(key, []).append(slots)
            for (_, general), members in sorted(groups.items(), key=lambda kv: repr(kv[0])):
                members = [m for m in members if m in templates]
                if general in templates and members:
                    target = templates[general]
                elif len(members) >= 2:
                    target = templates[general] = []
                else:
                    continue
                for m in members:
                    target.extend(templates.pop(m))
                changed = True
                break  # the index is stale: rebuild it
        return [(slots, sorted(rows)) for slots, rows in templates.items()]

    def _split(
        self,
        rows: list[int],
        pos: int,
        depth: int,
        pattern: list[str | None],
        out: list[tuple[tuple[str | None, ...], list[int]]],
    ) -> None:
        if pos == depth:
            out.append((tuple(pattern), rows))
            return
        groups: dict[str, list[int]] = defaultdict(list)
        for r in rows:
            groups[self.d.segs[r][pos]].append(r)
        variable = self._decide(groups, pos, depth)
        var_rows: list[int] = []
        for value in sorted(groups):
            if value in variable:
                var_rows.extend(groups[value])
            else:
                self._split(groups[value], pos + 1, depth, [*pattern, value], out)
        if var_rows:
            self._split(sorted(var_rows), pos + 1, depth, [*pattern, None], out)

    def _decide(self, groups: dict[str, list[int]], pos: int, depth: int) -> set[str]:
        """Which values at this position are instances of a variable (the rest: literals)."""
        w = self.d.weight
        idlike = {v for v in groups if looks_like_id(self.text(v))}
        if len(groups) == 1:
            return idlike
        weight = {v: sum(w[r] for r in rows) for v, rows in groups.items()}
        rest = [v for v in groups if v not in idlike]
        strong = sorted(
            (
                v
                for v in rest
                if len(groups[v]) >= MIN_STRONG_ROWS or weight[v] >= MIN_STRONG_WEIGHT
            ),
            key=lambda v: (-weight[v], v),
        )
        strong_set = set(strong)
        weak = [v for v in rest if v not in strong_set]
        buckets: list[tuple[Signature, list[str]]] = []
        for v in strong:
            sig = self._signature(groups[v], pos + 1, depth)
            for bsig, members in buckets:
                if self._compatible(bsig, sig):
                    members.append(v)
                    break
            else:
                buckets.append((sig, [v]))
        root_leaf = pos == 0 and depth == 1
        leaf = pos == depth - 1
        max_cat = self.opts.max_category_values
        variable = set(idlike)
        # one variable per position: the values that continue like the identifiers do,
        # or else the largest group of values that share one continuation; values of any
        # other group are literal routes (/articles/<slug> next to /images/<file>)
        candidates = [
            (sig, members)
            for sig, members in buckets
            if len(members) >= 2 and not (root_leaf and len(members) <= max_cat)
        ]
        if idlike and not leaf:
            id_rows = [r for v in idlike for r in groups[v]]
            id_sig = self._signature(id_rows, pos + 1, depth)
            for sig, members in buckets:
                if self._compatible(id_sig, sig):
                    variable.update(members)
        elif candidates:
            _, members = max(candidates, key=lambda c: (len(c[1]), sum(weight[v] for v in c[1])))
            variable.update(members)
        literals = [v for v in strong if v not in variable]
        if len(literals) + (0 if variable or root_leaf else len(weak)) > max_cat:
            return set(groups)  # too many different routes: it is a parameter
        if root_leaf:
            return variable  # rare one-segment paths stay routes of their own
        if variable or len(weak) >= 2:
            variable.update(weak)  # rare values: instances of the variable, not routes
        if variable and literals:
            # a lone value that continues like the variable and looks like its values is
            # one more instance (a popular category next to rarer ones), not a route
            var_rows = [r for v in variable for r in groups[v]]
            var_sig = self._signature(var_rows, pos + 1, depth)
            var_shape = Counter(shape(self.text(v)) for v in variable).most_common(1)[0][0]
            for v in literals:
                if shape(self.text(v)) == var_shape and self._compatible(
                    var_sig, self._signature(groups[v], pos + 1, depth)
                ):
                    variable.add(v)
        return variable

    def _signature(self, rows: list[int], start: int, depth: int) -> Signature:
        prof: list[tuple[Any, ...]] = []
        segs = self.d.segs
        for j in range(start, depth):
            values = {segs[r][j] for r in rows}
            if len(values) == 1:
                prof.append(("c", next(iter(values))))
                continue
            shapes = Counter(shape(self.text(v)) for v in values)
            top, k = shapes.most_common(1)[0]
            sh = top if k >= 0.8 * len(values) else "mixed"
            small = frozenset(values) if sh == "word" and len(values) <= SMALL_SET else None
            prof.append(("v", sh, small))
        total = sum(self.d.weight[r] for r in rows)
        qn: Counter[str] = Counter()
        for r in rows:
            qn.update(self.d.qnames[r])
        query = tuple(sorted((n, c / total) for n, c in qn.items() if c >= 0.05 * total))
        return tuple(prof), query

    def _compatible(self, a: Signature, b: Signature) -> bool:
        for x, y in zip(a[0], b[0], strict=True):
            if x[0] == "c" and y[0] == "c":
                if x[1] != y[1]:
                    sx, sy = shape(self.text(x[1])), shape(self.text(y[1]))
                    if sx != sy or sx == "word":
                        return False
            elif x[0] == "c" or y[0] == "c":
                const, var = (x, y) if x[0] == "c" else (y, x)
                if shape(self.text(const[1])) != var[1]:
                    return False
                if var[2] is not None and const[1] not in var[2]:
                    return False
            else:
                if x[1] != y[1]:
                    return False
                if x[2] is not None and y[2] is not None and _overlap(x[2], y[2]) < 0.5:
                    return False
        qa, qb = dict(a[1]), dict(b[1])
        return all(abs(qa.get(n, 0.0) - qb.get(n, 0.0)) < QUERY_SHARE_GAP for n in qa.keys() | qb)

    # -- describing ----------------------------------------------------------------------------

    def _describe(self, found: list[tuple[tuple[str | None, ...], list[int]]]) -> KbHost:
        d, opts = self.d, self.opts
        kept = []
        for slots, rows in found:
            total = sum(d.weight[r] for r in rows)
            if total >= opts.min_template_urls and total >= opts.min_template_share * d.total:
                kept.append((slots, rows, total))
        suspects = self._suspected_tracking(kept)
        templates = [self._template(slots, rows, total, suspects) for slots, rows, total in kept]
        matched = sum(total for _, _, total in kept)
        templates.sort(key=lambda t: (-t.urls, t.pattern))
        _unique_template_names(templates)
        return KbHost(
            domain=registrable_domain(d.host),
            urls=d.total,
            matched=round(matched / d.total, 4) if d.total else None,
            tracking=dict(sorted(d.tracking.items(), key=lambda kv: (-kv[1], kv[0]))[:20]),
            suspected_tracking=dict(sorted(suspects.items(), key=lambda kv: (-kv[1], kv[0]))),
            templates=templates,
        )

    def _suspected_tracking(
        self, kept: list[tuple[tuple[str | None, ...], list[int], int]]
    ) -> dict[str, int]:
        """Parameters that behave like click or session ids the tracking list misses: on
        several templates, on a minority of each one's URLs, a new id-like value nearly
        every time. They are not made fields; people confirm them in urls.tracking_params."""
        d = self.d
        where: Counter[str] = Counter()
        top_share: dict[str, float] = {}
        seen: Counter[str] = Counter()
        values: dict[str, set[str]] = defaultdict(set)
        for _, rows, total in kept:
            qn: Counter[str] = Counter()
            for r in rows:
                qn.update(d.qnames[r])
            for p, c in qn.items():
                where[p] += 1
                top_share[p] = max(top_share.get(p, 0.0), c / total)
                seen[p] += c
        out: dict[str, int] = {}
        for p, n_templates in where.items():
            if n_templates < 2 or top_share[p] >= 0.3 or seen[p] < 10:
                continue
            for (_, name), vals in d.qvalues.items():
                if name == p:
                    values[p].update(vals)
            distinct = values[p]
            idlike = sum(1 for v in distinct if looks_like_id(v))
            if len(distinct) >= 0.8 * seen[p] and idlike >= 0.8 * len(distinct):
                out[p] = seen[p]
        return out

    def _template(
        self,
        slots: tuple[str | None, ...],
        rows: list[int],
        total: int,
        exclude: dict[str, int] | None = None,
    ) -> KbTemplate:
        d, opts = self.d, self.opts
        max_cat = opts.max_category_values
        names: list[str | None] = []
        infos: list[tuple[str, Counter[str]]] = []
        before: list[str | None] = []
        for i, lit in enumerate(slots):
            if lit is not None:
                names.append(None)
                before.append(self.text(lit))
                continue
            values: Counter[str] = Counter()
            for r in rows:
                values[self.text(d.segs[r][i])] += d.weight[r]
            context = before[-1] if before else None
            kind = infer_kind(values, max_category=max_cat, context=context)
            names.append(path_field_name(kind, i, list(before), values))
            infos.append((kind, values))
            before.append(None)
        qn: Counter[str] = Counter()
        for r in rows:
            qn.update(d.qnames[r])
        params = sorted(
            p
            for p, c in qn.items()
            if c >= max(2, opts.min_param_share * total)
            and _PARAM_NAME.match(p)
            and p not in (exclude or {})
        )
        qinfos: list[tuple[str, str, Counter[str], int]] = []
        for p in params:
            values = Counter()
            for r in rows:
                got = d.qvalues.get((r, p))
                if got:
                    values.update(got)
            kind = infer_kind(values, max_category=max_cat, param=p)
            qinfos.append((p, kind, values, qn[p]))
        all_names = unique_names(
            [n for n in names if n is not None] + [query_field_name(p, k) for p, k, _, _ in qinfos]
        )
        path_names = iter(all_names[: len(infos)])
        slot_names = [None if n is None else next(path_names) for n in names]
        fields = {
            n: _field(kind, values)
            for n, (kind, values) in zip(all_names[: len(infos)], infos, strict=True)
        }
        query = {
            p: KbQueryField(field=n, share=round(c / total, 4), **_stats(kind, values))
            for n, (p, kind, values, c) in zip(all_names[len(infos) :], qinfos, strict=True)
        }
        top_paths = sorted(rows, key=lambda r: (-d.weight[r], r))[:3]
        return KbTemplate(
            name=_template_name(slots, slot_names, self.text),
            pattern=build_path_pattern(slots, slot_names),
            fields=fields,
            query=query,
            urls=total,
            share=round(total / d.total, 4) if d.total else None,
            distinct=len(rows),
            examples=["/" + "/".join(d.segs[r]) for r in top_paths],
        )


def _stats(kind: str, values: Counter[str]) -> dict[str, Any]:
    top = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return {"kind": kind, "cardinality": len(values), "examples": [v for v, _ in top]}


def _field(kind: str, values: Counter[str]) -> KbField:
    return KbField(**_stats(kind, values))


def _overlap(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / min(len(a), len(b)) if a and b else 0.0


def _template_name(
    slots: Sequence[str | None], names: Sequence[str | None], text: Callable[[str], str]
) -> str:
    if not slots:
        return "home"
    tokens: list[str] = []
    seen_literal = False
    for lit, name in zip(slots, names, strict=True):
        if lit is not None:
            tokens.append(sanitize(text(lit), default="t"))
            seen_literal = True
        elif not seen_literal and name:
            tokens.append(name)
    return "_".join(tokens[:3])[:60].strip("_") or "t"


def _unique_template_names(templates: list[KbTemplate]) -> None:
    """Most frequent first keep the plain name; others get their last field or a number."""
    seen: set[str] = set()
    for t in templates:
        if t.name in seen:
            last = next(reversed(t.fields), None) if t.fields else None
            candidates = [f"{t.name}_{last}"] if last and not t.name.endswith(last) else []
            candidates += [f"{t.name}_{k}" for k in range(2, len(templates) + 2)]
            t.name = next(c for c in candidates if c not in seen)
        seen.add(t.name)


def _drop_declared(host: KbHost, name: str, declared: Sequence[Template]) -> None:
    """Leave out learned templates a declared rule already describes (declared rules win)."""
    rules = [t for t in declared if t.matches_host(name)]
    if not rules:
        return
    shapes = {t.shape for t in rules if t.simple}
    keep = []
    for t in host.templates:
        if t.shape in shapes:
            continue
        complex_rules = [r for r in rules if not r.simple]
        if (
            complex_rules
            and t.examples
            and all(
                any(r.urlpattern.test(f"https://{name}{ex}") for r in complex_rules)
                for ex in t.examples
            )
        ):
            continue
        keep.append(t)
    host.templates = keep


__all__ = ["HostLearner", "LearnOptions", "UrlCounts", "learn"]
