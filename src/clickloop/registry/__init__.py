"""The model registry and the model loader used by scoring and serving.

>>> from clickloop.registry import open_registry, load_model
>>> with open_registry(project) as reg:                      # doctest: +SKIP
...     reg.list_models()
>>> model = load_model(project, "ctr@champion")             # doctest: +SKIP
>>> model.features, model.predict_proba(features_table)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clickloop.errors import require
from clickloop.registry.artifacts import ArtifactStore
from clickloop.registry.base import ALIASES, AliasEvent, ModelRef, ModelVersion, Registry, parse_ref
from clickloop.registry.gates import GateResult, evaluate_gates

if TYPE_CHECKING:
    from clickloop.project import Project
    from clickloop.training.model import ScoringModel

__all__ = [
    "ALIASES", "AliasEvent", "ArtifactStore", "GateResult", "ModelRef", "ModelVersion",
    "Registry", "artifact_root", "evaluate_gates", "load_model", "open_registry", "parse_ref",
]  # fmt: skip


def lake_root(project: Project) -> str:
    """The lake's root directory or URL."""
    from clickloop.config.infra import FsspecLakeConfig

    cfg = project.config.lake
    if isinstance(cfg, FsspecLakeConfig):
        return cfg.root.rstrip("/")
    return str(project.resolve_path(cfg.path) if cfg.path else project.state_path("lake"))


def artifact_root(project: Project) -> tuple[str, dict[str, object]]:
    """Where artifacts go: ``stores.metadata.artifacts`` if set, else ``<lake>/artifacts``."""
    from clickloop.config.base import reveal
    from clickloop.config.infra import FsspecLakeConfig, PostgresMetadataConfig

    meta = project.config.stores.metadata
    lake = project.config.lake
    options = reveal(dict(lake.storage_options)) if isinstance(lake, FsspecLakeConfig) else {}
    if isinstance(meta, PostgresMetadataConfig) and meta.artifacts:
        return project.resolve(meta.artifacts).rstrip("/"), options
    return f"{lake_root(project)}/artifacts", options


def sql_url(project: Project) -> str:
    """The SQLAlchemy URL of the metadata store (secrets only in the returned string)."""
    from clickloop.config.infra import PostgresMetadataConfig

    meta = project.config.stores.metadata
    if isinstance(meta, PostgresMetadataConfig):
        require("psycopg", "postgres", feature="the PostgreSQL model registry")
        url = meta.url.get_secret_value()
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                url = "postgresql+psycopg://" + url[len(prefix) :]
        return url
    path = project.resolve_path(meta.path) if meta.path else project.state_path("metadata.sqlite")
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def open_registry(project: Project) -> Registry:
    """The registry the project configures (``stores.metadata``): SQLite or PostgreSQL."""
    from clickloop.registry.sql import SqlRegistry

    root, options = artifact_root(project)
    store = ArtifactStore(root, options)
    return SqlRegistry(sql_url(project), store, cache=project.state_path("cache", "models"))


def load_model(project: Project, ref: str, *, registry: Registry | None = None) -> ScoringModel:
    """Load a registered version for scoring: ``ctr@champion``, ``ctr:3`` or ``ctr``.

    The returned object has ``features`` (the columns it reads),
    ``feature_sets`` (what to fetch per entity), ``request_columns(requests)``
    (URL and context features computed from a raw request) and
    ``predict_proba(table)`` (calibrated probabilities, shape ``(n,)``).
    """
    from clickloop.training.model import ScoringModel
    from clickloop.training.request import load_url_knowledge

    default = next(iter(project.config.models), None) if len(project.config.models) == 1 else None
    reg = registry or open_registry(project)
    try:
        mv = reg.resolve(ref, default_model=default)
        path = reg.download(mv, project.state_path("cache", "models", mv.model, str(mv.version)))
    finally:
        if registry is None:
            reg.close()
    model = ScoringModel.load(path, version=mv.version)
    if model.url_fields:
        model.knowledge = load_url_knowledge(project)
    return model
