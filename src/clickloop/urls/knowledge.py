"""URL knowledge applied: declared rules + the knowledge file, turned into feature columns.

:class:`UrlKnowledge` is what batch features, streaming features and the prediction
service call. ``extract`` is vectorised (work happens once per distinct URL, then is
taken back to every row); ``extract_one`` is the same thing for one URL at request
time; ``explain`` says in words how one URL is understood.

>>> kn = load_knowledge("shop")                             # doctest: +SKIP
>>> kn.extract(pa.array(["https://shop.example.com/items/1/1234"])).to_pylist()  # doctest: +SKIP
[{'host': 'shop.example.com', 'domain': 'example.com', 'template': 'items',
  'path': '/items/1/1234', 'category': 'clothes', 'category_code': '1', 'item_id': '1234'}]
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa

from clickloop.errors import ConfigError
from clickloop.urls.kbfile import KbTemplate, KnowledgeFile, content_hash, extraction_spec
from clickloop.urls.parse import ParsedUrl, registrable_domain, try_parse_url
from clickloop.urls.shapes import query_field_name
from clickloop.urls.templates import (
    FieldSpec,
    QueryField,
    Template,
    compile_rule,
    exec_complex,
    parse_path_pattern,
    specificity,
)

if TYPE_CHECKING:
    from clickloop.config import UrlsConfig
    from clickloop.project import Project
    from clickloop.urls.metrics import UrlMetrics

log = logging.getLogger(__name__)

BASE_COLUMNS: Final = ("host", "domain", "template", "path")
Row = dict[str, str | None]


class UrlKnowledge:
    """Everything clickloop knows about URLs, ready to apply.

    Build it with :func:`load_knowledge` (project config + knowledge file) or directly
    from a :class:`~clickloop.urls.kbfile.KnowledgeFile` and declared rules.
    """

    def __init__(
        self,
        knowledge: KnowledgeFile | None = None,
        *,
        rules: Sequence[Any] = (),
        dictionaries: dict[str, dict[str, str]] | None = None,
        tracking_params: Iterable[str] = (),
        where: str = "clickloop.yaml",
        knowledge_path: str | None = None,
        cache_size: int = 65536,
    ) -> None:
        self._args = (knowledge, tuple(rules), dictionaries, tuple(tracking_params), where,
                      knowledge_path, cache_size)  # fmt: skip
        self.knowledge = knowledge or KnowledgeFile()
        self.knowledge_path = knowledge_path
        self.tracking = frozenset(p.lower() for p in tracking_params)
        # dictionaries from the config win over the knowledge file's on a name clash
        self.dictionaries: dict[str, dict[str, str]] = {
            **self.knowledge.dictionaries,
            **(dictionaries or {}),
        }
        self.declared: list[Template] = [
            compile_rule(
                i,
                r.pattern,
                name=r.name,
                fields={
                    n: FieldSpec(n, _kind_of_type(f.type), f.type, f.dictionary)
                    for n, f in r.fields.items()
                },
                query=list(r.query),
                where=where,
            )
            for i, r in enumerate(rules)
        ]
        self.learned: dict[str, list[Template]] = {}
        self._by_depth: dict[str, dict[int, list[Template]]] = {}
        kb_where = knowledge_path or "the URL knowledge file"
        for host, hk in self.knowledge.hosts.items():
            compiled = [_compile_learned(host, t, i) for i, t in enumerate(hk.templates)]
            complex_ = [t for t in compiled if not t.simple]
            simple = sorted(
                (t for t in compiled if t.simple),
                key=lambda t: specificity(t.slots or ()),
            )
            self.learned[host] = complex_ + simple
            depth: dict[int, list[Template]] = {}
            for t in simple:
                depth.setdefault(len(t.slots or ()), []).append(t)
            self._by_depth[host] = depth
        self._check_dictionaries(where, kb_where)
        self.columns: list[str] = self._columns()
        self._cached_one = functools.lru_cache(maxsize=cache_size)(self._extract_one)
        self.metrics: UrlMetrics | None = None
        self.version: str = content_hash(
            {
                "knowledge": extraction_spec(self.knowledge),
                "rules": [
                    [t.pattern, t.name, [q.param for q in t.query], sorted(
                        (n, f.type, f.dictionary) for n, f in t.fields.items()
                    )]
                    for t in self.declared
                ],
                "dictionaries": self.dictionaries,
                "tracking": sorted(self.tracking),
            }
        )  # fmt: skip

    def instrument(self, registry: Any = None) -> UrlMetrics:
        """Count extracted URLs (matched / unmatched / invalid) in a Prometheus registry.

        >>> kn.instrument(registry)        # in a service, once     # doctest: +SKIP
        """
        from clickloop.urls.metrics import UrlMetrics

        self.metrics = UrlMetrics(registry)
        self.metrics.info.labels(self.version).set(1)
        return self.metrics

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # compiled patterns and the cache are not picklable: rebuild from the definitions
        # (process pools, Beam workers)
        return _restore, self._args

    # -- construction helpers -------------------------------------------------------------

    def _check_dictionaries(self, where: str, kb_where: str) -> None:
        for t in self.all_templates():
            for spec in t.fields.values():
                if spec.dictionary and spec.dictionary not in self.dictionaries:
                    origin = where if t.source == "declared" else kb_where
                    raise ConfigError(
                        f"{origin}: template {t.name!r} ({t.pattern}) field {spec.name!r} uses "
                        f"dictionary {spec.dictionary!r}, which is not defined",
                        hint="define it under urls.dictionaries in clickloop.yaml or under "
                        "dictionaries in the knowledge file "
                        f"(defined: {', '.join(sorted(self.dictionaries)) or 'none'})",
                    )

    def _columns(self) -> list[str]:
        names: list[str] = []
        coded: set[str] = set()
        for t in self.all_templates():
            for name in t.output_fields():
                if name not in names:
                    names.append(name)
                if t.fields.get(name, FieldSpec(name)).dictionary:
                    coded.add(name)
        out: list[str] = []
        for n in names:
            out.append(n)
            if n in coded:
                out.append(f"{n}_code")
        clash = [c for c in out if c in BASE_COLUMNS] + [
            c for c in out if out.count(c) > 1
        ]  # e.g. a field named "x_code" next to a coded field "x"
        if clash:
            raise ConfigError(
                f"URL field names clash with other output columns: {sorted(set(clash))}",
                hint="rename the field in urls.rules or in the knowledge file",
            )
        return out

    def all_templates(self) -> list[Template]:
        out = list(self.declared)
        for ts in self.learned.values():
            out.extend(ts)
        return out

    @property
    def schema(self) -> pa.Schema:
        """The exact schema :meth:`extract` returns (stable for one knowledge version)."""
        return pa.schema([pa.field(c, pa.string()) for c in (*BASE_COLUMNS, *self.columns)])

    @property
    def fields(self) -> list[str]:
        """Field column names (``category``, ``category_code``, ``item_id``, …)."""
        return list(self.columns)

    # -- matching (one URL) ----------------------------------------------------------------

    def match(self, p: ParsedUrl) -> tuple[Template, dict[str, str | None]] | None:
        """The template a parsed URL matches and its raw field values, or ``None``."""
        normalized: str | None = None
        for t in self.declared:
            if not t.matches_host(p.host):
                continue
            if t.scheme_test is not None and not t.scheme_test(p.scheme):
                continue
            if t.simple:
                if t.match_path(p.segments):
                    return t, t.values(p.segments, _param_getter(p))
                continue
            normalized = normalized or p.normalized
            got = exec_complex(t, normalized)
            if got is not None:
                return t, {**got, **{q.field: _param(p, q.param) for q in t.query}}
        learned = self.learned.get(p.host)
        if not learned:
            return None
        if learned[0].urlpattern is not None:  # hand-written complex patterns first
            normalized = normalized or p.normalized
            for t in learned:
                if t.urlpattern is None:
                    break
                got = exec_complex(t, normalized)
                if got is not None:
                    return t, {**got, **{q.field: _param(p, q.param) for q in t.query}}
        segments = p.segments
        for t in self._by_depth[p.host].get(len(segments), ()):
            if t.match_path(segments):
                return t, t.values(segments, _param_getter(p))
        return None

    def extract_one(self, url: str | None) -> Row:
        """One URL → one row of :meth:`extract` (for request-time features).

        Recent answers are cached (URLs repeat), so a repeated URL costs a dict copy.

        >>> kn.extract_one("https://shop.example.com/items/1/1234")["category"]  # doctest: +SKIP
        'clothes'
        """
        row = self.lookup(url)
        if self.metrics is not None:
            invalid = row["host"] is None
            matched = row["template"] is not None
            self.metrics.count(int(matched), int(not matched and not invalid), int(invalid))
        return row

    def lookup(self, url: str | None) -> Row:
        """:meth:`extract_one` without counting it in the metrics (used by :meth:`extract`)."""
        if url is None:
            return dict.fromkeys((*BASE_COLUMNS, *self.columns))
        return dict(self._cached_one(url))

    def _extract_one(self, url: str) -> Row:
        row: Row = dict.fromkeys((*BASE_COLUMNS, *self.columns))
        p = try_parse_url(url, self.tracking)
        if p is None:
            return row
        row["host"] = p.host
        row["domain"] = registrable_domain(p.host)
        row["path"] = p.path
        hit = self.match(p)
        if hit is not None:
            t, raw = hit
            row["template"] = t.name
            for name, value in raw.items():
                self._set_field(row, t, name, value)
        return row

    def _set_field(self, row: Row, t: Template, name: str, value: str | None) -> None:
        spec = t.fields.get(name)
        if spec is not None and spec.type == "int":
            value = canonical_int(value)
        if f"{name}_code" in row:
            row[f"{name}_code"] = value
        if spec is not None and spec.dictionary and value is not None:
            value = self.dictionaries[spec.dictionary].get(value)
        row[name] = value

    # -- many URLs -------------------------------------------------------------------------

    def extract(
        self,
        urls: pa.Array | pa.ChunkedArray | Sequence[str | None],
        *,
        encoded: bool = False,
    ) -> pa.Table:
        """URLs → a table with ``host``, ``domain``, ``template``, ``path`` and one column
        per field, row for row (a null or invalid URL gives a row of nulls).

        Work is done once per distinct URL and taken back to every row. Columns are
        strings (:attr:`schema`); ``encoded=True`` returns them dictionary-encoded over
        the distinct URLs instead, which skips copying strings (same values).

        >>> table = kn.extract(events.column("url"))    # doctest: +SKIP
        >>> table.column("category")                   # doctest: +SKIP
        """
        from clickloop.urls.columnar import extract_table

        table = extract_table(self, urls, encoded=encoded)
        if self.metrics is not None:
            n = table.num_rows
            invalid = table.column("host").null_count
            unmatched = table.column("template").null_count - invalid
            self.metrics.count(n - invalid - unmatched, unmatched, invalid)
        return table

    # -- explanation -----------------------------------------------------------------------

    def explain(self, url: str) -> dict[str, Any]:
        """How one URL is understood, as a JSON-ready dict (``clickloop urls test``)."""
        p = try_parse_url(url, self.tracking)
        out: dict[str, Any] = {"url": url, "valid": p is not None, "version": self.version}
        if p is None:
            out["reason"] = "not an absolute URL with a host (scheme://host/path)"
            return out
        out.update(
            normalized=p.normalized,
            scheme=p.scheme,
            host=p.host,
            port=p.port,
            domain=registrable_domain(p.host),
            path=p.path,
            segments=list(p.segments),
            query={k: v for k, v in p.query},
            tracking_removed={k: v for k, v in p.tracking},
        )
        hit = self.match(p)
        if hit is None:
            out["template"] = None
            out["fields"] = {}
            out["reason"] = self._why_unmatched(p)
            return out
        t, raw = hit
        row = self.extract_one(url)
        out["template"] = {
            "name": t.name,
            "source": t.source,
            "pattern": t.pattern,
            "host": t.host or "(pattern)",
        }
        fields: dict[str, Any] = {}
        for name, value in raw.items():
            spec = t.fields.get(name, FieldSpec(name))
            fields[name] = {
                "value": row.get(name),
                "raw": value,
                "kind": spec.kind,
                "dictionary": spec.dictionary,
                "from": "query" if any(q.field == name for q in t.query) else "path",
            }
        out["fields"] = fields
        return out

    def _why_unmatched(self, p: ParsedUrl) -> str:
        mine = [t for t in self.declared if t.matches_host(p.host)]
        learned = self.learned.get(p.host, [])
        if not mine and not learned:
            return f"no declared rule or learned template for host {p.host}"
        depth = len(p.segments)
        same = [t for t in learned if t.slots is not None and len(t.slots) == depth]
        if not same:
            return (
                f"host {p.host} has {len(mine) + len(learned)} templates, none with "
                f"{depth} path segments"
            )
        shown = ", ".join(t.pattern for t in same[:5]) + (" …" if len(same) > 5 else "")
        return f"no template of {p.host} with {depth} path segments matches ({shown})"


# -- helpers ---------------------------------------------------------------------------------


def _restore(
    knowledge: KnowledgeFile | None,
    rules: tuple[Any, ...],
    dictionaries: dict[str, dict[str, str]] | None,
    tracking_params: tuple[str, ...],
    where: str,
    knowledge_path: str | None,
    cache_size: int,
) -> UrlKnowledge:
    return UrlKnowledge(
        knowledge,
        rules=rules,
        dictionaries=dictionaries,
        tracking_params=tracking_params,
        where=where,
        knowledge_path=knowledge_path,
        cache_size=cache_size,
    )


def _kind_of_type(t: str) -> str:
    return {"int": "id", "category": "category"}.get(t, "text")


def _param(p: ParsedUrl, name: str) -> str | None:
    for pairs in (p.query, p.tracking):
        for k, v in pairs:
            if k == name:
                return "" if v is None else v
    return None


def _param_getter(p: ParsedUrl) -> Callable[[str], str | None]:
    return lambda name: _param(p, name)


def canonical_int(value: str | None) -> str | None:
    """``"0042"`` → ``"42"``; anything that is not digits → ``None`` (for ``type: int``)."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return value.lstrip("0") or "0"


def _compile_learned(host: str, t: KbTemplate, order: int) -> Template:
    fields = {n: FieldSpec(n, f.kind, "str", f.dictionary) for n, f in t.fields.items()}
    query = []
    for param, q in t.query.items():
        name = q.output_name(param)
        query.append(QueryField(param, name))
        fields[name] = FieldSpec(name, q.kind, "str", q.dictionary)
    try:
        slots, names = parse_path_pattern(t.pattern)
    except ValueError:
        from clickloop.urls.templates import _urlpattern

        up = _urlpattern()({"hostname": host, "pathname": t.pattern})
        return Template(t.name, "learned", t.pattern, host, None, (), tuple(query), fields,
                        urlpattern=up, order=order)  # fmt: skip
    for n in names:
        if n is not None:
            fields.setdefault(n, FieldSpec(n))
    return Template(t.name, "learned", t.pattern, host, slots, names, tuple(query), fields,
                    order=order)  # fmt: skip


def knowledge_path(project: Project) -> Path:
    """Where the project's knowledge file lives (``urls.knowledge``)."""
    return project.resolve_path(project.config.urls.knowledge)


def from_config(
    urls: UrlsConfig, knowledge: KnowledgeFile | None = None, *, where: str = "clickloop.yaml",
    knowledge_path: str | None = None,
) -> UrlKnowledge:  # fmt: skip
    """Build :class:`UrlKnowledge` from a ``urls:`` config section and a knowledge file."""
    return UrlKnowledge(
        knowledge,
        rules=urls.rules,
        dictionaries=urls.dictionaries,
        tracking_params=urls.tracking_params,
        where=where,
        knowledge_path=knowledge_path,
    )


def load_knowledge(project: Project | str | os.PathLike[str]) -> UrlKnowledge:
    """The project's URL knowledge: declared rules (``urls.rules``) + the knowledge file.

    >>> kn = load_knowledge("shop")          # a directory, or a loaded Project  # doctest: +SKIP
    >>> kn.extract(table.column("url"))      # doctest: +SKIP
    """
    from clickloop.project import Project

    proj = project if isinstance(project, Project) else Project.load(project, require_config=False)
    path = knowledge_path(proj)
    kb = KnowledgeFile.load(path)
    where = str(proj.config_path) if proj.config_path else "configuration"
    return from_config(proj.config.urls, kb, where=where, knowledge_path=str(path))


__all__ = ["BASE_COLUMNS", "UrlKnowledge", "from_config", "load_knowledge", "query_field_name"]
