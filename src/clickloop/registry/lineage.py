"""Lineage of a model version: where its data, features, URL knowledge and code came from.

>>> lin = build_lineage(project, "ctr", examples_summary, params={...})   # doctest: +SKIP
>>> lin["code"]["clickloop"], lin["data"]["fingerprint"]
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import platform
import subprocess
from typing import TYPE_CHECKING, Any

from clickloop import __version__

if TYPE_CHECKING:
    from clickloop.project import Project

log = logging.getLogger(__name__)

LIBRARIES = ("lightgbm", "sklearn", "numpy", "pyarrow", "duckdb", "scipy", "joblib")


def config_digest(obj: Any) -> str:
    """A short stable hash of a config model (or any JSON-able value)."""
    data = obj.model_dump(mode="json") if hasattr(obj, "model_dump") else obj
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def git_commit(path: Any) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=path,
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def library_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = str(importlib.import_module(name).__version__)
        except (ImportError, AttributeError):
            continue
    out.update(extra or {})
    return out


def feature_versions(project: Project, feature_sets: list[str]) -> dict[str, str]:
    """A version per feature set: the features stage's own, else a digest of its config."""
    out: dict[str, str] = {}
    try:
        features = importlib.import_module("clickloop.features")
        for fs in features.load_sets(
            project, [n for n in feature_sets if n in project.config.features]
        ):
            if getattr(fs, "version", ""):
                out[fs.name] = str(fs.version)
    except Exception as exc:  # a broken definition must not hide the lineage: use digests
        log.debug("feature set versions unavailable: %s", exc)
    for name in feature_sets:
        if name not in out:
            cfg = project.config.features.get(name)
            out[name] = config_digest(cfg) if cfg is not None else "undefined"
    return out


def build_lineage(
    project: Project,
    model: str,
    *,
    data: dict[str, Any],
    split: dict[str, Any],
    feature_sets: list[str],
    url_knowledge: str | None,
    config: Any,
    seed: int,
    libraries: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "model": model,
        "project": project.name,
        "data": data,
        "split": split,
        "features": feature_versions(project, feature_sets),
        "url_knowledge": url_knowledge,
        "config": config.model_dump(mode="json") if hasattr(config, "model_dump") else config,
        "config_digest": config_digest(config),
        "seed": seed,
        "code": {"clickloop": __version__, "git_commit": git_commit(project.root)},
        "libraries": library_versions(libraries),
    }
