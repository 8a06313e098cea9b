"""Feature definitions: what a feature set computes, independent of where it runs.

A :class:`FeatureSet` is compiled from a ``features.<name>`` section of
``clickloop.yaml`` (or built in Python with :func:`define`): an entity key, an
event filter, derived row columns and windowed aggregations. Compilation checks
every column reference and type, derives feature names and a version.

**Names** are ``<set>__<op>[_<column>][_<window>]``: the column's dots become
underscores and a lifetime aggregation has no window suffix::

    user_activity__count_1h            user_activity__distinct_count_url_item_id_7d
    user_activity__top_k_category_7d   user_purchases__sum_props_price_30d
    user_activity__since_last          user_activity__count           (lifetime)

``name:`` on an aggregation replaces ``<op>[_<column>]``; the window suffix stays.

**Windows** slide in hops (tiles): a window ``w`` as of time ``T`` covers events
with ``floor(T - w, hop) <= ts < T`` — exact at the head, rounded down to a hop
boundary at the tail, so it spans between ``w`` and ``w + hop``. The hop is the
largest of 1d, 1h, 5m, 1m, 10s, 1s that divides ``w`` at least ten times (1h → 5m,
1d and 7d → 1h, 30d → 1d, 10m → 1m). Batch and streaming use the same rule, which
is what makes their values identical.

**Version**: a hash of everything that changes values (entity, filter, derived
columns, aggregations, hops, engine semantics) — not descriptions or TTLs.

>>> fs = define("user_activity", entity="user_id", where="type = 'page_view'",
...             aggregate=[{"op": "count", "windows": ["1h", "1d"]}, {"op": "since_last"}])
>>> fs.names
['user_activity__count_1h', 'user_activity__count_1d', 'user_activity__since_last']
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import orjson
import pyarrow as pa
from pydantic import ValidationError

from clickloop.config.ml import AggregateConfig, FeatureSetConfig
from clickloop.errors import ConfigError, NotFoundError
from clickloop.features.expr import (
    EVENT_COLUMNS,
    Col,
    ExpressionError,
    Func,
    Node,
    Type,
    canonical,
    check,
    columns,
    parse,
)
from clickloop.units import format_duration, parse_duration

if TYPE_CHECKING:
    from clickloop.project import Project

SEMANTICS: Final = "clickloop-features/1"
US: Final = 1_000_000
HOPS: Final = tuple(round(parse_duration(x).total_seconds() * US) for x in
                    ("1d", "1h", "5m", "1m", "10s", "1s", "100ms", "10ms", "1ms"))  # fmt: skip
URL_BASE_FIELDS: Final = ("host", "domain", "template", "path")
NUMERIC_OPS: Final = ("sum", "mean", "min", "max")
SET_OPS: Final = ("distinct_count", "approx_distinct_count", "top_k", "histogram")


def hop_for(window_us: int) -> int:
    """The tile size (µs) of a window: the largest standard hop dividing it ≥ 10 times.

    >>> hop_for(3_600_000_000) // 60_000_000      # 1h → 5 minutes
    5
    """
    for hop in HOPS:
        if window_us % hop == 0 and window_us // hop >= 10:
            return hop
    for hop in HOPS:  # short windows: the largest hop that divides them at all
        if window_us % hop == 0:
            return hop
    return 1


@dataclass(frozen=True)
class Feature:
    """One output column of a feature set."""

    name: str
    op: str
    column: str | None  # input column reference; None: the event itself
    window: int | None  # µs; None: lifetime
    hop: int | None  # µs; None: lifetime
    k: int
    default: Any
    dtype: pa.DataType
    input_type: Type | None = None
    input: str | None = None  # key of the kernel input in ``FeatureSet.inputs``

    @property
    def window_label(self) -> str:
        return (
            "lifetime"
            if self.window is None
            else format_duration(timedelta(microseconds=self.window))
        )


@dataclass(frozen=True)
class FeatureSet:
    """A compiled feature set (see the module docstring)."""

    name: str
    entity: tuple[str, ...]
    where: Node | None
    derive: Mapping[str, Node]
    features: tuple[Feature, ...]
    env: Mapping[str, Type]
    ttl: timedelta | None = None
    allowed_lateness: timedelta = timedelta(hours=1)
    version: str = ""
    source: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def schema(self) -> pa.Schema:
        """Arrow schema of the feature columns."""
        return pa.schema([pa.field(f.name, f.dtype) for f in self.features])

    @property
    def inputs(self) -> dict[str, Node]:
        """Aggregation inputs → their typed expression (derived names resolved).

        Keys are column references, or ``num(<ref>)`` where a numeric aggregation
        reads a text column as numbers.
        """
        out: dict[str, Node] = {}
        for f in self.features:
            if f.input is not None and f.input not in out:
                node = self.column_node(f.column or "")
                out[f.input] = (
                    Func("num", (node,), type="number") if f.input.startswith("num(") else node
                )
        return out

    def column_node(self, ref: str) -> Node:
        if ref in self.derive:
            return self.derive[ref]
        return Col(ref, type=self.env.get(ref, "string"))

    @property
    def url_fields(self) -> set[str]:
        """``url.X`` fields this set reads (from its filter, derived columns, inputs, entity)."""
        refs: set[str] = set(self.entity)
        if self.where is not None:
            refs |= columns(self.where)
        for node in self.derive.values():
            refs |= columns(node)
        for f in self.features:
            if f.column:
                refs.add(f.column)
        return {r.removeprefix("url.") for r in refs if r.startswith("url.")}

    @property
    def windows(self) -> list[int]:
        return sorted({f.window for f in self.features if f.window is not None})

    @property
    def max_window(self) -> int | None:
        """Longest window plus its hop (µs), or None when some feature is lifetime."""
        if any(f.window is None for f in self.features):
            return None
        return max(((f.window or 0) + (f.hop or 0) for f in self.features), default=0)


def _dtype(op: str, input_type: Type | None) -> pa.DataType:
    if op in ("count", "distinct_count", "approx_distinct_count"):
        return pa.int64()
    if op in (*NUMERIC_OPS, "since_last"):
        return pa.float64()
    if op == "top_k":
        return pa.list_(pa.string())
    if op == "histogram":
        return pa.map_(pa.string(), pa.int64())
    # first / last keep the input's type
    return {"string": pa.string(), "bool": pa.bool_()}.get(input_type or "", pa.float64())


def _slug(ref: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", ref.lower()).strip("_")


def _window_us(w: str) -> int | None:
    if w == "lifetime":
        return None
    return int(parse_duration(w).total_seconds() * US)


def compile_set(
    name: str,
    cfg: FeatureSetConfig,
    *,
    url_fields: Iterable[str] | None = None,
    url_version: str | None = None,
) -> FeatureSet:
    """Check and compile one feature set.

    ``url_fields``: what ``url.X`` may name (None: anything); ``url_version``: the URL
    knowledge version, part of the set's version when the set reads URL fields.
    """
    where_at = f"features.{name}"
    env: dict[str, Type] = dict(EVENT_COLUMNS)
    fields = None if url_fields is None else {*URL_BASE_FIELDS, *url_fields}
    url_refs = set()
    for text in [cfg.where or "", *cfg.derive.values(), *(a.column or "" for a in cfg.aggregate),
                 *([cfg.entity] if isinstance(cfg.entity, str) else cfg.entity)]:  # fmt: skip
        url_refs |= {m for m in re.findall(r"\burl\.([A-Za-z_]\w*)", text)}
    for f in url_refs if fields is None else fields:
        env[f"url.{f}"] = "string"

    derive: dict[str, Node] = {}
    for dname, text in cfg.derive.items():
        at = f"{where_at}.derive.{dname}"
        if not re.match(r"^[a-z][a-z0-9_]{0,62}$", dname) or dname in EVENT_COLUMNS:
            raise ConfigError(
                f"{at}: {dname!r} cannot name a derived column",
                hint="use lowercase letters, digits and '_', and not a canonical event field",
            )
        node = _checked(text, env, at)
        if node.type == "timestamp":
            raise ConfigError(f"{at}: a derived column cannot be a timestamp")
        derive[dname] = node
        env[dname] = node.type

    where = None
    if cfg.where:
        where = _checked(cfg.where, env, f"{where_at}.where")
        if where.type not in ("bool", "null"):
            raise ConfigError(f"{where_at}.where: a filter must be true/false, not a {where.type}")

    entity = (cfg.entity,) if isinstance(cfg.entity, str) else tuple(cfg.entity)
    if not entity:
        raise ConfigError(f"{where_at}.entity: give at least one entity column")
    for ref in entity:
        if _checked(ref, env, f"{where_at}.entity").type != "string":
            raise ConfigError(f"{where_at}.entity: {ref!r} is not a text column")

    feats: list[Feature] = []
    for i, agg in enumerate(cfg.aggregate):
        feats.extend(_features(name, agg, env, f"{where_at}.aggregate[{i}]"))
    if not feats:
        raise ConfigError(f"{where_at}.aggregate: a feature set needs at least one aggregation")
    seen: dict[str, int] = {}
    for f in feats:
        if f.name in seen:
            raise ConfigError(
                f"{where_at}: two aggregations produce the feature {f.name!r}",
                hint="give one of them a distinct `name:`",
            )
        seen[f.name] = 1

    fs = FeatureSet(
        name=name, entity=entity, where=where, derive=derive, features=tuple(feats), env=env,
        ttl=cfg.ttl, allowed_lateness=cfg.allowed_lateness,
        source=cfg.model_dump(mode="json"),
    )  # fmt: skip
    return _with_version(fs, url_version if fs.url_fields else None)


def _checked(text: str, env: Mapping[str, Type], at: str) -> Node:
    try:
        return check(parse(text), env, src=text)
    except ExpressionError as exc:
        raise ConfigError(f"{at}: {exc.message}", hint=exc.hint) from None


def _features(set_name: str, agg: AggregateConfig, env: Mapping[str, Type], at: str
              ) -> list[Feature]:  # fmt: skip
    op = agg.op
    input_type: Type | None = None
    if agg.column is not None:
        node = _checked(agg.column, env, f"{at}.column")
        if not isinstance(node, Col):
            raise ConfigError(
                f"{at}.column: {agg.column!r} is an expression; name a column",
                hint="define it under `derive:` and aggregate the derived name",
            )
        input_type = node.type
        if input_type == "timestamp" and op != "count":
            raise ConfigError(f"{at}: {op} of a timestamp column is not supported")
        if op in ("histogram", "top_k") and input_type != "string":
            raise ConfigError(
                f"{at}: {op} needs a text (categorical) column, {agg.column!r} is a {input_type}"
            )
    if agg.default is not None and op in ("top_k", "histogram"):
        raise ConfigError(f"{at}.default: {op} has no numeric default (empty means none)")
    if agg.default is not None and op in ("first", "last") and input_type in ("string", "bool"):
        raise ConfigError(f"{at}.default: a numeric default does not fit a {input_type} column")
    key = agg.column
    if agg.column is not None and op in NUMERIC_OPS and input_type != "number":
        if input_type not in ("string", "bool", "null"):
            raise ConfigError(f"{at}: {op} needs numbers, {agg.column!r} is a {input_type}")
        key = f"num({agg.column})"
        input_type = "number"
    stem = agg.name or (op + (f"_{_slug(agg.column)}" if agg.column else ""))
    if not re.match(r"^[a-z][a-z0-9_]*$", stem):
        raise ConfigError(f"{at}.name: {stem!r} is not a valid feature name")
    out = []
    for w in agg.windows:
        wus = _window_us(w)
        suffix = "" if wus is None else f"_{w}"
        out.append(Feature(
            name=f"{set_name}__{stem}{suffix}", op=op, column=agg.column, window=wus,
            hop=None if wus is None else hop_for(wus), k=agg.k, default=agg.default,
            dtype=_dtype(op, input_type), input_type=input_type, input=key,
        ))  # fmt: skip
    return out


def _with_version(fs: FeatureSet, url_version: str | None) -> FeatureSet:
    doc = {
        "semantics": SEMANTICS,
        "urls": url_version,
        "entity": list(fs.entity),
        "where": canonical(fs.where) if fs.where is not None else None,
        "derive": {k: canonical(v) for k, v in fs.derive.items()},
        "features": [
            [f.name, f.op, f.column, f.window, f.hop, f.k if f.op in ("top_k", "histogram") else 0,
             f.default]
            for f in fs.features
        ],
    }  # fmt: skip
    digest = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
    return FeatureSet(**{**fs.__dict__, "version": digest})


def _reads_urls(cfg: FeatureSetConfig) -> bool:
    entity = [cfg.entity] if isinstance(cfg.entity, str) else cfg.entity
    texts = [cfg.where or "", *cfg.derive.values(), *(a.column or "" for a in cfg.aggregate),
             *entity]  # fmt: skip
    return any(re.search(r"\burl\.", t) for t in texts)


def define(name: str, **spec: Any) -> FeatureSet:
    """Build a feature set in Python, with the same keys as ``features.<name>`` in YAML.

    >>> define("user_clicks", entity="user_id", where="type = 'click'",
    ...        aggregate=[{"op": "count", "windows": ["1d"]}]).names
    ['user_clicks__count_1d']
    """
    url_fields = spec.pop("url_fields", None)
    url_version = spec.pop("url_version", None)
    try:
        cfg = FeatureSetConfig.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"features.{name}.{loc}: {first['msg']}") from None
    return compile_set(name, cfg, url_fields=url_fields, url_version=url_version)


def load_sets(
    project: Project,
    names: Sequence[str | FeatureSet] | None = None,
    *,
    knowledge: Any = None,
) -> list[FeatureSet]:
    """Compile the project's feature sets (all, or those named; FeatureSet objects pass through).

    Sets reading ``url.X`` fields are checked against the URL knowledge, and its
    version is part of theirs: it is loaded from the project unless given.

    >>> [fs.version for fs in load_sets(project, ["user_activity"])]   # doctest: +SKIP
    ['3f9c2a1d0b7e']
    """
    configured = project.config.features
    wanted: Sequence[str | FeatureSet] = list(configured) if names is None else names
    if knowledge is None and any(
        isinstance(n, str) and n in configured and _reads_urls(configured[n]) for n in wanted
    ):
        from clickloop.urls import load_knowledge

        knowledge = load_knowledge(project)
    url_fields: list[str] | None = None
    url_version: str | None = None
    if knowledge is not None:
        url_fields = list(knowledge.extract(pa.array([], pa.string())).column_names)
        url_version = getattr(knowledge, "version", None)
    out: list[FeatureSet] = []
    for item in wanted:
        if isinstance(item, FeatureSet):
            out.append(item)
            continue
        if item not in configured:
            raise NotFoundError(
                f"no feature set named {item!r} in {project.config_path or 'the project'}",
                hint=f"defined: {', '.join(configured) or 'none'} (see `clickloop features list`)",
            )
        out.append(
            compile_set(item, configured[item], url_fields=url_fields, url_version=url_version)
        )
    return out
