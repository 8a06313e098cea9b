"""The feature join: examples + point-in-time feature sets + request-time columns.

Feature sets come from the features stage in one call
(``clickloop.features.training_set``: values computed only from events strictly
before each example's time, one row per example, in input order); request-time
columns from :mod:`clickloop.training.request`. A caller may pass its own
``feature_fn`` with the same signature (an external feature source).

>>> table, candidates, crosses = join_features(project, cfg, examples.table)   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from clickloop.config.ml import ModelConfig
from clickloop.errors import ConfigError, DataError, InvalidInputError, NotFoundError
from clickloop.training.examples import KEY_PREFIX, TS
from clickloop.training.exprs import column_name
from clickloop.training.request import URL_FEATURES, request_columns

if TYPE_CHECKING:
    from clickloop.project import Project

log = logging.getLogger(__name__)

FeatureFn = Callable[..., pa.Table]


def feature_sets_of(cfg: ModelConfig) -> list[str]:
    return [f for f in cfg.features if f != URL_FEATURES]


def _features_api() -> tuple[FeatureFn, Callable[..., list[str]] | None]:
    try:
        mod = importlib.import_module("clickloop.features")
    except ImportError as exc:
        raise NotFoundError(
            "the model uses feature sets, but this build has no features stage",
            hint="remove them from models.<name>.features or install the full clickloop",
        ) from exc
    fn = getattr(mod, "training_set", None)
    if fn is None:
        raise NotFoundError("clickloop.features has no training_set()")
    return fn, getattr(mod, "feature_names", None)


def entity_features(
    project: Project,
    sets: list[str],
    entity: str,
    examples: pa.Table,
    *,
    feature_fn: FeatureFn | None = None,
    where: str = "models.<name>",
) -> pa.Table:
    """Point-in-time feature-set columns for every example (input order)."""
    if not sets:
        return pa.table({})
    unknown = [s for s in sets if s not in project.config.features]
    if unknown and feature_fn is None:
        raise ConfigError(
            f"{where}.features: no feature set named {', '.join(map(repr, unknown))}",
            hint=f"defined feature sets: {', '.join(project.config.features) or 'none'}; "
            f"'{URL_FEATURES}' adds URL fields",
        )
    names_fn = None
    if feature_fn is None:
        feature_fn, names_fn = _features_api()
    keys, by = _set_keys(project, sets, entity, examples, where)
    out = feature_fn(project, keys, sets, entity=by, ts=TS)
    if out.num_rows != examples.num_rows:
        raise DataError(
            f"the feature join returned {out.num_rows} rows for {examples.num_rows} examples",
            hint="training_set must return one row per example, in input order",
        )
    if names_fn is not None:
        names = [n for n in names_fn(project, sets) if n in out.column_names]
    else:
        names = [n for n in out.column_names if n not in keys.column_names]
    return out.select(names)


def _set_keys(
    project: Project, sets: list[str], entity: str, examples: pa.Table, where: str
) -> tuple[pa.Table, str | dict[str, str]]:
    """The key columns the feature join needs: the model's entity, and one per other entity.

    A set keyed by the model's entity (``user_id``) joins on it; a set keyed by
    something else (``props.item_id``, ``session_id``) joins on the example's own
    value of it: the ``key__…`` column examples carry, the column of that name, or
    the property read from a request's ``props``.
    """
    keys = examples.select([entity, TS])
    by: dict[str, str] = {}
    for name in sets:
        fs = project.config.features.get(name)
        ref = fs.entity if fs is not None else entity
        ref = ref[0] if isinstance(ref, list) and len(ref) == 1 else ref
        if not isinstance(ref, str) or ref == entity:
            by[name] = entity
            continue
        col = KEY_PREFIX + column_name(ref)
        if col not in keys.column_names:
            keys = keys.append_column(col, _key_values(examples, ref, col, where))
        by[name] = col
    if all(c == entity for c in by.values()):
        return keys, entity
    return keys, by


def _key_values(examples: pa.Table, ref: str, col: str, where: str) -> pa.Array:
    if col in examples.column_names:
        return pc.cast(examples.column(col).combine_chunks(), pa.string())
    if ref in examples.column_names:
        return pc.cast(examples.column(ref).combine_chunks(), pa.string())
    name = ref.removeprefix("props.")
    if ref.startswith("props.") and "props" in examples.column_names:
        props = examples.column("props").combine_chunks()
        if pa.types.is_map(props.type):
            return pc.cast(pc.map_lookup(props, name, "first"), pa.string())
        if pa.types.is_struct(props.type) and name in [f.name for f in props.type]:
            return pc.cast(pc.struct_field(props, name), pa.string())
    raise InvalidInputError(
        f"{where}: a feature set is keyed by {ref}, and the rows have no {ref!r} to join on",
        hint=f"give each row a {ref!r} column"
        + (f" or a props map with {name!r}" if ref.startswith("props.") else ""),
    )


def join_features(
    project: Project,
    cfg: ModelConfig,
    examples: pa.Table,
    *,
    feature_fn: FeatureFn | None = None,
    knowledge: Any = None,
    where: str = "models.<name>",
) -> tuple[pa.Table, list[str], list[tuple[str, str, str]]]:
    """The examples with every candidate feature column; returns (table, candidates, crosses)."""
    feats = entity_features(
        project, feature_sets_of(cfg), cfg.entity, examples, feature_fn=feature_fn, where=where
    )
    req = request_columns(
        examples, cfg.context, url_fields=URL_FEATURES in cfg.features, knowledge=knowledge
    )
    table = examples
    candidates: list[str] = []
    for part in (feats, req):
        for name in part.column_names:
            if name in table.column_names:
                table = table.drop([name])  # request columns replace raw ctx copies
            table = table.append_column(name, part.column(name))
            candidates.append(name)
    crosses = []
    for x in cfg.crosses:
        for col in (x.feature, x.key):
            if col not in table.column_names:
                raise ConfigError(
                    f"{where}.crosses: no column {col!r} among the features",
                    hint=f"available: {', '.join(candidates)}",
                )
        t = table.column(x.feature).type
        how = "count_of" if pa.types.is_map(t) else "rank_of"
        if not (pa.types.is_map(t) or pa.types.is_list(t) or pa.types.is_large_list(t)):
            how = "equals"  # a scalar: does the request value equal it?
        name = x.name or f"{x.feature}__{how}__{x.key}"
        crosses.append((name, x.feature, x.key))
    return table, candidates, crosses
