"""Promotion through gates, with a fresh comparison when the champion has changed.

A challenger is compared with the champion on the *challenger's* test slice
(its examples are stored with the artifact). Training records that comparison;
if the champion changed since, promotion scores both models on that slice again
before applying the gates of ``models.<name>.gates``.

>>> promote(project, "ctr:4")                                  # doctest: +SKIP
{'model': 'ctr', 'alias': 'champion', 'version': 4, 'previous': 3, 'gates': {...}}
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from clickloop.errors import ConflictError
from clickloop.registry.gates import evaluate_gates
from clickloop.training.examples import LABEL
from clickloop.training.scoring import evaluation, score_examples

if TYPE_CHECKING:
    from clickloop.project import Project
    from clickloop.registry.base import ModelVersion, Registry
    from clickloop.training.join import FeatureFn

log = logging.getLogger(__name__)


def compare(
    project: Project,
    registry: Registry,
    candidate: ModelVersion,
    champion: ModelVersion,
    *,
    feature_fn: FeatureFn | None = None,
) -> dict[str, Any]:
    """Score both versions on the candidate's stored test slice; return both evaluations."""
    from clickloop.registry import load_model

    path = registry.download(
        candidate, project.state_path("cache", "models", candidate.model, str(candidate.version))
    )
    test = pq.read_table(path / "test_examples.parquet")
    y = np.asarray(test.column(LABEL).to_numpy(zero_copy_only=False), dtype=np.int8)
    cfg = project.config.models.get(candidate.model)
    slices = {
        c: np.asarray(test.column(c).to_numpy(zero_copy_only=False), dtype=object)
        for c in (cfg.slices if cfg else [])
        if c in test.column_names
    }
    out: dict[str, Any] = {}
    scores = {}
    for role, mv in (("champion", champion), ("candidate", candidate)):
        model = load_model(project, mv.ref, registry=registry)
        scores[role] = score_examples(project, model, test, feature_fn=feature_fn)
        out[role] = evaluation(
            y,
            scores[role],
            model.threshold,
            slices,
            min_examples=cfg.gates.min_slice_examples if cfg else 1,
        )
    return out


def promote(
    project: Project,
    ref: str,
    *,
    alias: str = "champion",
    force: bool = False,
    reason: str = "",
    actor: str = "",
    registry: Registry | None = None,
    feature_fn: FeatureFn | None = None,
) -> dict[str, Any]:
    """Point ``alias`` at the version ``ref`` names, if the gates allow (or ``force``)."""
    from clickloop.registry import open_registry

    reg = registry or open_registry(project)
    try:
        mv = reg.resolve(ref)
        current = reg.aliases(mv.model).get(alias)
        gates = None
        if alias == "champion" and current is not None and current != mv.version:
            cfg = project.config.models.get(mv.model)
            comparison = mv.metrics.get("comparison") or {}
            if (
                comparison.get("champion_version") == current
                and not comparison.get("error")
                and comparison.get("champion_test")
            ):
                cand_t, champ_t = mv.metrics["test"], comparison["champion_test"]
                cand_s, champ_s = mv.metrics.get("slices"), comparison.get("champion_slices")
            else:  # the champion changed since training: compare again on the same slice
                log.info("comparing %s with champion %s:%s", mv.ref, mv.model, current)
                ev = compare(
                    project, reg, mv, reg.get_version(mv.model, current), feature_fn=feature_fn
                )
                cand_t, champ_t = ev["candidate"]["test"], ev["champion"]["test"]
                cand_s, champ_s = ev["candidate"]["slices"], ev["champion"]["slices"]
            if cfg is None:
                from clickloop.config.ml import GatesConfig

                gate_cfg = GatesConfig()
            else:
                gate_cfg = cfg.gates
            result = evaluate_gates(
                cand_t, champ_t, gate_cfg, candidate_slices=cand_s, champion_slices=champ_s
            )
            gates = result.to_dict()
            reg.update_metrics(
                mv.model,
                mv.version,
                {
                    "comparison": {
                        "champion_version": current,
                        "champion_test": champ_t,
                        "champion_slices": champ_s,
                        "gates": gates,
                        "error": None,
                    }
                },
            )
            if not result.passed and not force:
                raise ConflictError(
                    f"{mv.ref} does not pass the promotion gates against champion "
                    f"{mv.model}:{current}: " + "; ".join(result.failures()),
                    hint="improve the model, relax models.<name>.gates, or pass --force",
                    gates=gates,
                )
        event = reg.set_alias(
            mv.model,
            alias,
            mv.version,
            reason=reason or ("forced" if force and gates else "promoted"),
            actor=actor,
        )
        return {
            "model": mv.model,
            "alias": alias,
            "version": mv.version,
            "previous": event.previous,
            "gates": gates,
            "forced": bool(force and gates and not gates["passed"]),
        }
    finally:
        if registry is None:
            reg.close()
