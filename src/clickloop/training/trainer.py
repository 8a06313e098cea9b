"""``train(project, "ctr")``: examples → features → learning → report → registry.

>>> result = train(project, "ctr")                                   # doctest: +SKIP
>>> result.version, result.metrics["roc_auc"], result.report_html
(3, 0.7712, PosixPath('.clickloop/reports/ctr/v3/report.html'))
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clickloop.config.ml import ModelConfig
from clickloop.errors import ClickloopError, ConfigError, ConflictError
from clickloop.training.examples import EXAMPLE_ID, LABEL, TS, Examples, build_examples
from clickloop.training.join import FeatureFn, feature_sets_of, join_features
from clickloop.training.learn import Dataset, Learned, learn
from clickloop.training.report import make_figures, write_report
from clickloop.training.request import URL_FEATURES, knowledge_version, load_url_knowledge
from clickloop.training.scoring import evaluation, score_examples
from clickloop.training.source import Events

if TYPE_CHECKING:
    from clickloop.project import Project
    from clickloop.registry.base import Registry

log = logging.getLogger(__name__)

TEST_EXAMPLES = "test_examples.parquet"


@dataclass
class TrainResult:
    model: str
    version: int | None
    metrics: dict[str, Any]
    baseline: dict[str, Any]
    champion: dict[str, Any] | None
    gates: dict[str, Any] | None
    report_html: Path
    report_json: Path
    report: dict[str, Any] = field(repr=False)
    promoted: bool = False
    learned: Learned | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        t = self.metrics
        return {
            "model": self.model,
            "version": self.version,
            "examples": self.report["data"]["examples"],
            "features_kept": sum(1 for s in self.report["selection"] if s["kept"]),
            "features_candidates": len(self.report["selection"]),
            "test": {
                k: t.get(k)
                for k in (
                    "roc_auc",
                    "pr_auc",
                    "log_loss",
                    "brier",
                    "ece",
                    "precision",
                    "recall",
                    "f1",
                    "accuracy",
                    "threshold",
                )
            },
            "baseline": {k: self.baseline.get(k) for k in ("roc_auc", "log_loss", "brier")},
            "champion": self.champion,
            "gates": self.gates,
            "promoted": self.promoted,
            "report": str(self.report_html),
            "report_json": str(self.report_json),
        }


def model_config(project: Project, name: str) -> ModelConfig:
    try:
        return project.config.models[name]
    except KeyError:
        raise ConfigError(
            f"no model named {name!r} in {project.config_path or 'the configuration'}",
            hint=f"models defined: {', '.join(project.config.models) or 'none'}",
        ) from None


def train(
    project: Project,
    name: str,
    *,
    events: Events | None = None,
    feature_fn: FeatureFn | None = None,
    start: str | datetime | None = None,
    end: str | datetime | None = None,
    seed: int | None = None,
    register: bool = True,
    promote: bool = False,
    threads: int = 0,
    report_dir: Path | None = None,
) -> TrainResult:
    """Train model ``name`` as configured; register it (alias ``challenger``) and report.

    ``promote=True`` then promotes it to ``champion`` if the promotion gates pass
    (a first version always does). ``events`` replaces the lake as the source
    and ``feature_fn`` the features stage (same signature as
    ``clickloop.features.training_set``).
    """
    cfg = model_config(project, name)
    if seed is not None:
        cfg = cfg.model_copy(update={"seed": seed})
    examples = build_examples(project, cfg, events=events, start=start, end=end)
    knowledge = load_url_knowledge(project) if URL_FEATURES in cfg.features else None
    table, candidates, crosses = join_features(
        project,
        cfg,
        examples.table,
        feature_fn=feature_fn,
        knowledge=knowledge,
        where=f"models.{name}",
    )
    learned = learn(Dataset(table, candidates, crosses), cfg, name=name, threads=threads)
    learned.model.knowledge = knowledge

    test = table.take(pa.array(learned.split.test))
    y_test = np.asarray(test.column(LABEL).to_numpy(zero_copy_only=False), dtype=np.int8)
    slice_cols = {
        c: np.asarray(test.column(c).to_numpy(zero_copy_only=False), dtype=object)
        for c in cfg.slices
        if c in test.column_names
    }
    reg = _open_registry(project) if register or promote else None
    try:
        champion_eval, champ_version, gates = None, None, None
        if reg is not None:
            champion_eval, champ_version = _champion(project, reg, name, test, feature_fn)
        ref_scores = champion_eval.pop("_scores", None) if champion_eval else None
        own = evaluation(
            y_test,
            learned.test_scores,
            learned.model.threshold,
            slice_cols,
            reference=ref_scores,
            min_examples=cfg.gates.min_slice_examples,
        )
        if champion_eval and "test" in champion_eval:
            from clickloop.registry.gates import evaluate_gates

            gates = evaluate_gates(
                own["test"],
                champion_eval["test"],
                cfg.gates,
                candidate_slices=own["slices"],
                champion_slices=champion_eval["slices"],
            ).to_dict()
        elif champion_eval:
            gates = {
                "passed": False,
                "checks": [
                    {"check": "champion scored", "passed": False, "detail": champion_eval["error"]}
                ],
            }
        report = _report(
            project, name, cfg, examples, learned, own, champion_eval, gates, knowledge
        )
        version = None
        with tempfile.TemporaryDirectory(prefix="clickloop-train-") as tmp:
            art = Path(tmp) / "artifact"
            manifest = learned.model.save(art)
            figures = make_figures(report)
            write_report(report, art, figures=figures)
            _test_examples(examples, learned, test, art / TEST_EXAMPLES)
            if reg is not None and register:
                mv = reg.create_version(
                    name,
                    art,
                    algorithm=learned.model.estimator.kind,
                    fingerprint=examples.fingerprint,
                    lineage=report["lineage"],
                    metrics={
                        "test": _scalars(own["test"]),
                        "validation": _scalars(learned.valid_metrics),
                        "baseline": _scalars(learned.baseline),
                        "slices": own["slices"],
                        "comparison": _comparison(champ_version, champion_eval, gates),
                    },
                    params=report["params"],
                    description=cfg.description,
                )
                version = mv.version
                reg.set_alias(name, "challenger", version, reason="trained")
                log.info("registered %s:%d (%s)", name, version, manifest["model_file"])
        report["version"] = version
        out = report_dir or project.state_path(
            "reports",
            name,
            f"v{version}" if version else datetime.now(UTC).strftime("%Y%m%dT%H%M%S"),
        )
        paths = write_report(report, Path(out), figures=figures)
        promoted = False
        if promote and reg is not None and version is not None:
            from clickloop.training.promotion import promote as do_promote

            try:
                do_promote(
                    project,
                    f"{name}:{version}",
                    registry=reg,
                    feature_fn=feature_fn,
                    reason="trained and promoted",
                )
                promoted = True
            except ConflictError as exc:  # gates refused: registered, not promoted
                log.warning("%s:%s not promoted: %s", name, version, exc.message)
    finally:
        if reg is not None:
            reg.close()
    return TrainResult(
        name,
        version,
        own["test"],
        learned.baseline,
        _champion_summary(champ_version, champion_eval),
        gates,
        paths["html"],
        paths["json"],
        report,
        promoted,
        learned,
    )


def _open_registry(project: Project) -> Registry:
    from clickloop.registry import open_registry

    return open_registry(project)


def _champion(
    project: Project, reg: Registry, name: str, test: pa.Table, feature_fn: FeatureFn | None
) -> tuple[dict[str, Any] | None, int | None]:
    """The current champion scored on this test slice (None when there is no champion)."""
    from clickloop.registry import load_model

    current = reg.aliases(name).get("champion")
    if current is None:
        return None, None
    try:
        champ = load_model(project, f"{name}:{current}", registry=reg)
        scores = score_examples(project, champ, test, feature_fn=feature_fn)
    except ClickloopError as exc:
        log.warning("could not score the champion %s:%s: %s", name, current, exc.message)
        return {"version": current, "error": exc.message}, current
    y = np.asarray(test.column(LABEL).to_numpy(zero_copy_only=False), dtype=np.int8)
    cols = {
        c: np.asarray(test.column(c).to_numpy(zero_copy_only=False), dtype=object)
        for c in model_config(project, name).slices
        if c in test.column_names
    }
    ev = evaluation(y, scores, champ.threshold, cols)
    ev.update(version=current, _scores=scores)
    return ev, current


def _comparison(
    version: int | None, ev: dict[str, Any] | None, gates: dict[str, Any] | None
) -> dict[str, Any] | None:
    if ev is None:
        return None
    return {
        "champion_version": version,
        "champion_test": _scalars(ev.get("test", {})),
        "champion_slices": ev.get("slices", {}),
        "error": ev.get("error"),
        "gates": gates,
    }


def _champion_summary(version: int | None, ev: dict[str, Any] | None) -> dict[str, Any] | None:
    if ev is None:
        return None
    t = ev.get("test", {})
    return {
        "version": version,
        "error": ev.get("error"),
        **{k: t.get(k) for k in ("roc_auc", "pr_auc", "log_loss", "brier")},
    }


def _scalars(m: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in m.items()
        if isinstance(v, int | float | str | type(None)) or k == "confusion"
    }


def _test_examples(examples: Examples, learned: Learned, test: pa.Table, path: Path) -> None:
    """The test slice's examples (keys, request data, label, score) for later comparisons."""
    keep = [c for c in examples.table.column_names if c in test.column_names]
    t = test.select(keep).append_column("score", pa.array(learned.test_scores))
    pq.write_table(t, path, compression="zstd")


def _report(
    project: Project,
    name: str,
    cfg: ModelConfig,
    examples: Examples,
    learned: Learned,
    own: dict[str, Any],
    champion: dict[str, Any] | None,
    gates: dict[str, Any] | None,
    knowledge: Any,
) -> dict[str, Any]:
    from clickloop.registry.lineage import build_lineage

    est = learned.model.estimator
    lineage = build_lineage(
        project,
        name,
        data=examples.summary(),
        split=learned.split.describe(),
        feature_sets=feature_sets_of(cfg),
        url_knowledge=knowledge_version(knowledge),
        config=cfg,
        seed=cfg.seed,
        libraries=est.library_versions(),
    )
    return {
        "model": name,
        "version": None,
        "project": project.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "algorithm": est.kind,
        "params": learned.params,
        "data": examples.summary(),
        "split": learned.split.describe(),
        "sampling": learned.sample.steps,
        "calibration": learned.model.calibrator.to_dict() | {"x": None, "y": None},
        "threshold": {
            "value": learned.model.threshold,
            "how": learned.threshold_how,
            "rule": cfg.threshold,
        },
        "test": own["test"],
        "validation": learned.valid_metrics,
        "baseline": learned.baseline,
        "curves": own["curves"],
        "slices": own["slices"],
        "champion": None
        if champion is None
        else {
            "version": champion.get("version"),
            "error": champion.get("error"),
            "test": champion.get("test", {}),
            "curves": champion.get("curves"),
        },
        "gates": gates,
        "selection": learned.selection.rows,
        "importances": learned.importances,
        "search": learned.trials,
        "features": learned.model.features,
        "timings": learned.timings,
        "lineage": lineage,
    }


__all__ = ["EXAMPLE_ID", "TS", "TrainResult", "model_config", "train"]
