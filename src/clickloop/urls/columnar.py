"""The vectorised path of :meth:`UrlKnowledge.extract`.

URLs repeat a lot (every impression repeats its page's URL), so the work is done on
the distinct values (dictionary encoding) and taken back to every row. Distinct URLs
are split in two:

* the *fast* ones — plain ``http(s)://host[:port]/path?query`` with nothing that
  normalisation would change beyond case, default port and trailing slash (no ``%``
  in the path or in a parameter name, no dot segments, no empty segments, no
  credentials) — go through Arrow compute
  kernels end to end: parts by regular expression, templates by hash joins of their
  literal segments, fields by list indexing;
* the rest go through the scalar reference (:meth:`UrlKnowledge.extract_one`).

Both give identical rows (a property test checks it on random URLs).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clickloop.urls.parse import decode_component, registrable_domain
from clickloop.urls.templates import Template

if TYPE_CHECKING:
    from clickloop.urls.knowledge import UrlKnowledge

_PCHAR: Final = r"[A-Za-z0-9\-._~!$&'()*+,;=:@]"
FAST_URL: Final = (
    r"^(?i:https?)://[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.?(?::[1-9][0-9]{0,3})?"
    rf"(?:/{_PCHAR}+)*/?(?:\?[^#\x00-\x20]*)?(?:#.*)?$"
)
# …and none of: a dot segment, a "%" inside a query parameter name, a path session id
NOT_FAST: Final = r"/\.\.?(?:[/?#]|$)|\?(?:[^#]*&)?[^=&#]*%|(?i:;(?:jsessionid|phpsessid|sid)=)"
SMALL: Final = 24  # fewer distinct URLs than this: the scalar path is faster
SEP: Final = "\x1f"


def as_string_array(urls: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> pa.Array:
    """Any URL column (list, chunked, large_string, dictionary) as one Arrow array."""
    if isinstance(urls, pa.ChunkedArray):
        urls = urls.combine_chunks() if urls.num_chunks != 1 else urls.chunk(0)
    if not isinstance(urls, pa.Array):
        urls = pa.array(list(urls), pa.string())
    if isinstance(urls, pa.DictionaryArray):
        if not pa.types.is_string(urls.dictionary.type):
            urls = pa.DictionaryArray.from_arrays(urls.indices, urls.dictionary.cast(pa.string()))
        return urls
    if not pa.types.is_string(urls.type):
        urls = urls.cast(pa.string())
    return urls


def extract_table(
    kn: UrlKnowledge,
    urls: pa.Array | pa.ChunkedArray | Sequence[str | None],
    *,
    encoded: bool = False,
) -> pa.Table:
    arr = as_string_array(urls)
    schema = kn.schema
    enc = arr if isinstance(arr, pa.DictionaryArray) else pc.dictionary_encode(arr)
    uniq, idx = enc.dictionary, enc.indices
    if encoded:
        dict_schema = pa.schema(
            [pa.field(f.name, pa.dictionary(pa.int32(), pa.string())) for f in schema]
        )
        if len(arr) == 0:
            return dict_schema.empty_table()
        cols = extract_distinct(kn, uniq)
        idx32 = idx.cast(pa.int32())
        return pa.table(
            [pa.DictionaryArray.from_arrays(idx32, cols[f.name]) for f in schema],
            schema=dict_schema,
        )
    if len(arr) == 0:
        return schema.empty_table()
    cols = extract_distinct(kn, uniq)
    n = len(arr)
    return pa.table(
        [
            pa.nulls(n, pa.string()) if c.null_count == len(c) else c.take(idx)
            for c in (cols[f.name] for f in schema)
        ],
        schema=schema,
    )


def extract_distinct(kn: UrlKnowledge, uniq: pa.Array) -> dict[str, pa.Array]:
    """One output row per (distinct) input URL, as columns."""
    names = kn.schema.names
    m = len(uniq)
    if m <= SMALL:
        return _scalar_columns(kn, uniq.to_pylist(), names)
    fast = pc.and_(
        pc.match_substring_regex(uniq, FAST_URL),
        pc.invert(pc.match_substring_regex(uniq, NOT_FAST)),
    )
    fast_np = pc.fill_null(fast, False).to_numpy(zero_copy_only=False)
    fast_idx = np.flatnonzero(fast_np)
    parts: dict[str, list[tuple[np.ndarray, pa.Array]]] = {n: [] for n in names}
    scalar_idx: list[np.ndarray] = [np.flatnonzero(~fast_np & uniq.is_valid().to_numpy(False))]
    if len(fast_idx):
        cols, to_scalar = _extract_fast(kn, uniq.take(pa.array(fast_idx)))
        for name, pieces in cols.items():
            parts[name].extend((fast_idx[r], v) for r, v in pieces)
        scalar_idx.append(fast_idx[to_scalar])
    slow = np.concatenate(scalar_idx)
    if len(slow):
        slow_cols = _scalar_columns(kn, uniq.take(pa.array(slow)).to_pylist(), names)
        for name in names:
            parts[name].append((slow, slow_cols[name]))
    return {n: scatter(m, parts[n]) for n in names}


def _scalar_columns(
    kn: UrlKnowledge, urls: list[str | None], names: Sequence[str]
) -> dict[str, pa.Array]:
    rows = [kn.lookup(u) for u in urls]
    return {n: pa.array([r[n] for r in rows], pa.string()) for n in names}


def scatter(n: int, parts: list[tuple[np.ndarray, pa.Array]]) -> pa.Array:
    """An array of length ``n`` with each part's values at its positions, null elsewhere."""
    parts = [(r, v) for r, v in parts if len(r)]
    if not parts:
        return pa.nulls(n, pa.string())
    values = pa.concat_arrays([v.cast(pa.string()) for _, v in parts] + [pa.nulls(1, pa.string())])
    inverse = np.full(n, len(values) - 1, np.int64)
    inverse[np.concatenate([r for r, _ in parts])] = np.arange(len(values) - 1)
    return values.take(pa.array(inverse))


# -- the fast path -------------------------------------------------------------------------


def _extract_fast(
    kn: UrlKnowledge, urls: pa.Array
) -> tuple[dict[str, list[tuple[np.ndarray, pa.Array]]], np.ndarray]:
    """Columns for fast URLs (as parts) and the rows that must take the scalar path."""
    m = len(urls)
    # plain splits, no regular expression with groups: several times faster
    scheme, rest = split_once(urls, "://")
    scheme = pc.ascii_lower(scheme)
    rest, _ = split_once(rest, "#")
    rest, query = split_once(rest, "?")
    query = pc.fill_null(query, "")
    authority, tail = split_once(rest, "/")
    host, _ = split_once(authority, ":")  # the port is dropped: templates are per host
    host = pc.utf8_rtrim(pc.ascii_lower(host), ".")
    tail = pc.utf8_rtrim(pc.fill_null(tail, ""), "/")  # at most one trailing "/" here
    path = pc.binary_join_element_wise("/", tail, "")
    henc = pc.dictionary_encode(host)
    hosts: list[str] = henc.dictionary.to_pylist()
    hcode = henc.indices.to_numpy()
    senc = pc.dictionary_encode(scheme)
    schemes: list[str] = senc.dictionary.to_pylist()
    scode = senc.indices.to_numpy()
    domains = pa.array([registrable_domain(h) for h in hosts], pa.string())

    cols: dict[str, list[tuple[np.ndarray, pa.Array]]] = {n: [] for n in kn.schema.names}
    everything = np.arange(m)
    cols["host"].append((everything, host))
    cols["domain"].append((everything, domains.take(henc.indices)))
    cols["path"].append((everything, path))

    # hosts with a complex (URLPattern) template in play go the scalar way entirely
    complex_host = np.array(
        [any(not t.simple for t in _templates_for(kn, h)) for h in hosts], dtype=bool
    )
    to_scalar = complex_host[hcode]
    assigned = np.full(m, -1, np.int64)
    assigned[to_scalar] = -2
    segs = pc.split_pattern(tail, "/")
    nseg = pc.list_value_length(segs).to_numpy().astype(np.int64)
    nseg[pc.equal(tail, "").to_numpy(zero_copy_only=False)] = 0
    flat = pc.list_flatten(segs)
    offs = segs.offsets.to_numpy()[:m].astype(np.int64)
    templates: list[Template] = []

    def seg_at(rows: np.ndarray, i: int) -> pa.Array:
        return flat.take(pa.array(offs[rows] + i))

    # declared rules, in order
    for t in kn.declared:
        if not t.simple:
            continue
        ok_host = np.array([t.matches_host(h) for h in hosts], dtype=bool)
        ok_scheme = np.array(
            [t.scheme_test is None or t.scheme_test(s) for s in schemes], dtype=bool
        )
        slots = t.slots or ()
        rows = np.flatnonzero(
            ok_host[hcode] & ok_scheme[scode] & (assigned == -1) & (nseg == len(slots))
        )
        for i, lit in enumerate(slots):
            if lit is None or not len(rows):
                continue
            rows = rows[pc.equal(seg_at(rows, i), lit).to_numpy(zero_copy_only=False)]
        if len(rows):
            assigned[rows] = len(templates)
            templates.append(t)

    # learned templates: per (host, depth), hash joins on the literal segments
    order = np.argsort(hcode, kind="stable")
    bounds = np.flatnonzero(np.diff(hcode[order])) + 1
    for rows_h in np.split(order, bounds):
        if not len(rows_h):
            continue
        by_depth = kn._by_depth.get(hosts[hcode[rows_h[0]]])
        if not by_depth:
            continue
        rows_h = rows_h[assigned[rows_h] == -1]
        for depth, ts in by_depth.items():
            rows = rows_h[nseg[rows_h] == depth]
            if not len(rows):
                continue
            for mask, group in _mask_groups(ts):
                if not len(rows):
                    break
                lit_pos = [i for i, is_lit in enumerate(mask) if is_lit]
                if not lit_pos:
                    assigned[rows] = len(templates)
                    templates.append(group[0])
                    rows = rows[:0]
                    break
                keys = [SEP.join(t.slots[i] for i in lit_pos) for t in group]  # type: ignore[index, misc]
                cols_k = [seg_at(rows, i) for i in lit_pos]
                key = cols_k[0] if len(cols_k) == 1 else pc.binary_join_element_wise(*cols_k, SEP)
                hit = pc.index_in(key, value_set=pa.array(keys, pa.string()))
                hit_np = pc.fill_null(hit, -1).to_numpy(zero_copy_only=False)
                found = hit_np >= 0
                base = len(templates)
                templates.extend(group)
                assigned[rows[found]] = base + hit_np[found]
                rows = rows[~found]

    # fields of every matched row
    tnames = pa.array([t.name for t in templates] + [None], pa.string())
    tidx = np.where(assigned >= 0, assigned, len(templates))
    cols["template"].append((everything, tnames.take(pa.array(tidx))))
    if templates:
        by_t = np.argsort(assigned, kind="stable")
        sorted_assigned = assigned[by_t]
        starts = np.searchsorted(sorted_assigned, np.arange(len(templates)))
        ends = np.searchsorted(sorted_assigned, np.arange(len(templates)), side="right")
        for k, t in enumerate(templates):
            rows = by_t[starts[k] : ends[k]]
            if len(rows):
                _fields(kn, t, rows, seg_at, query, cols)
    if to_scalar.any():  # those rows are filled by the scalar path instead
        keep = ~to_scalar
        cols = {
            n: [(r[keep[r]], v.filter(pa.array(keep[r]))) for r, v in pieces]
            for n, pieces in cols.items()
        }
    return cols, np.flatnonzero(to_scalar)


def split_once(arr: pa.Array, sep: str) -> tuple[pa.Array, pa.Array]:
    """``(before, after)`` the first ``sep`` of each string; ``after`` is null without one."""
    parts = pc.split_pattern(arr, sep, max_splits=1)
    offs = parts.offsets.to_numpy()
    flat = parts.values
    first = flat.take(pa.array(offs[:-1]))
    has = np.diff(offs) > 1
    second = flat.take(pa.array(np.where(has, offs[:-1] + 1, offs[:-1])))
    return first, pc.if_else(pa.array(has), second, pa.scalar(None, pa.string()))


def _templates_for(kn: UrlKnowledge, host: str) -> list[Template]:
    return [t for t in kn.declared if t.matches_host(host)] + kn.learned.get(host, [])


def _mask_groups(ts: list[Template]) -> list[tuple[tuple[bool, ...], list[Template]]]:
    """Templates of one depth grouped by which positions are literal, most specific first."""
    groups: dict[tuple[bool, ...], list[Template]] = {}
    for t in ts:
        groups.setdefault(tuple(s is not None for s in t.slots or ()), []).append(t)
    return sorted(groups.items(), key=lambda kv: tuple(0 if b else 1 for b in kv[0]))


def _fields(
    kn: UrlKnowledge,
    t: Template,
    rows: np.ndarray,
    seg_at: object,
    query: pa.Array,
    cols: dict[str, list[tuple[np.ndarray, pa.Array]]],
) -> None:
    raw: dict[str, pa.Array] = {}
    for i, name in enumerate(t.slot_fields):
        if name is not None:
            raw[name] = seg_at(rows, i)  # type: ignore[operator]
    if t.query:
        q = query.take(pa.array(rows))
        for qf in t.query:
            raw[qf.field] = query_param(q, qf.param)
    for name, values in raw.items():
        spec = t.fields.get(name)
        if spec is not None and spec.type == "int":
            values = _canonical_int(values)
        code = f"{name}_code"
        if code in cols:
            cols[code].append((rows, values))
        if spec is not None and spec.dictionary:
            d = kn.dictionaries[spec.dictionary]
            pos = pc.index_in(values, value_set=pa.array(list(d), pa.string()))
            values = pa.array(list(d.values()), pa.string()).take(pos)
        cols[name].append((rows, values))


def query_param(query: pa.Array, name: str) -> pa.Array:
    """The first value of parameter ``name`` in raw query strings (no ``%`` in names), decoded."""
    if not name or any(c in name for c in "+&=#%"):
        return pa.nulls(len(query), pa.string())
    raw = re.sub(r"([^A-Za-z0-9_ ])", r"\\\1", name).replace(" ", r"\+")
    got = pc.extract_regex(query, rf"(?:^|&){raw}(?:=(?P<v>[^&]*))?(?:&|$)")
    values = pc.if_else(pc.is_valid(got), got.field("v"), pa.scalar(None, pa.string()))
    plain = pc.replace_substring(values, "+", " ")
    escaped = pc.fill_null(pc.match_substring(values, "%"), False)
    if not pc.any(escaped).as_py():
        return plain
    rows = np.flatnonzero(escaped.to_numpy(zero_copy_only=False))
    decoded = [decode_component(v) for v in values.take(pa.array(rows)).to_pylist()]
    return pc.replace_with_mask(plain, escaped, pa.array(decoded, pa.string()))


def _canonical_int(values: pa.Array) -> pa.Array:
    digits = pc.match_substring_regex(values, r"^[0-9]+$")
    stripped = pc.replace_substring_regex(values, r"^0+([0-9])", r"\1")
    return pc.if_else(digits, stripped, pa.scalar(None, pa.string()))
