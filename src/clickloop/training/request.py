"""Request-time features: what is known about the example itself when it is scored.

Two kinds, computed by the same code in training, batch scoring and the
prediction service:

* context columns of the example event (``context: [props.position]`` →
  ``ctx__position``);
* URL fields (``request.url`` in a model's ``features``): what URL knowledge
  says about the page URL (``page__…``) and the item URL (``item__…``, from
  ``props.item_url``), e.g. ``item__category``.

>>> cols = request_columns(requests, ["props.position"], url_fields=True, knowledge=kb)
>>> cols.column_names                                          # doctest: +SKIP
['ctx__position', 'page__host', 'page__category', ..., 'item__category']
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from clickloop.training.exprs import column_name

if TYPE_CHECKING:
    from clickloop.project import Project

log = logging.getLogger(__name__)

URL_FEATURES = "request.url"
CONTEXT_PREFIX = "ctx__"
_HOST_RE = r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?(?P<host>[^/?#:]+)"


def load_url_knowledge(project: Project) -> Any | None:
    """The project's URL knowledge, or None when this build has no URL stage."""
    try:
        urls = importlib.import_module("clickloop.urls")
    except ImportError:
        urls = None
    load = getattr(urls, "load_knowledge", None)
    if load is None:
        log.warning("URL knowledge is not available: URL features are limited to the host")
        return None
    return load(project)


def knowledge_version(knowledge: Any | None) -> str | None:
    if knowledge is None:
        return None
    for attr in ("version", "fingerprint", "digest"):
        v = getattr(knowledge, attr, None)
        if v is not None:
            return str(v() if callable(v) else v)
    return None


def _lookup(table: pa.Table, ref: str) -> pa.ChunkedArray | pa.Array:
    name = CONTEXT_PREFIX + column_name(ref)
    if name in table.column_names:
        return table.column(name)
    if ref.startswith("props.") and "props" in table.column_names:
        return pc.map_lookup(table.column("props"), ref.removeprefix("props."), "first")
    if ref in table.column_names:
        return table.column(ref)
    if ref.removeprefix("props.") in table.column_names:  # flattened request payloads
        return table.column(ref.removeprefix("props."))
    return pa.nulls(table.num_rows, pa.string())


def _urls(table: pa.Table, which: str) -> pa.Array:
    if which in table.column_names:
        col = table.column(which)
    elif which == "item_url" and "props" in table.column_names:
        col = pc.map_lookup(table.column("props"), "item_url", "first")
    else:
        return pa.nulls(table.num_rows, pa.string())
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return col.cast(pa.string())


def url_columns(urls: pa.Array, prefix: str, knowledge: Any | None) -> dict[str, pa.Array]:
    """Fields of each URL, as columns named ``<prefix>__<field>``."""
    out: dict[str, pa.Array] = {}
    if knowledge is not None:
        fields = knowledge.extract(urls)
        for name in fields.column_names:
            if name in ("url", "path", "normalized_url", "canonical_url"):
                continue  # the raw string is an identifier, not a feature
            col = fields.column(name)
            out[f"{prefix}__{name}"] = (
                col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            )
    if f"{prefix}__host" not in out:
        host = pc.utf8_lower(pc.extract_regex(urls, _HOST_RE).field(0))
        out[f"{prefix}__host"] = host
    return out


def request_columns(
    table: pa.Table,
    context: list[str],
    *,
    url_fields: bool,
    knowledge: Any | None = None,
) -> pa.Table:
    """The request-time feature columns for every row of ``table``.

    ``table`` holds requests or examples: ``url``, ``props`` (a map) or
    ``item_url``, and either ``ctx__*`` columns or the context fields.
    """
    cols: dict[str, Any] = {}
    for ref in context:
        cols[CONTEXT_PREFIX + column_name(ref)] = _lookup(table, ref)
    if url_fields:
        cols.update(url_columns(_urls(table, "url"), "page", knowledge))
        cols.update(url_columns(_urls(table, "item_url"), "item", knowledge))
    if not cols:
        return pa.table({"_": pa.nulls(table.num_rows)}).drop(["_"])
    return pa.table(cols)
