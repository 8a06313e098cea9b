"""Training: speed on 1M examples × 50 features, and model quality on simulator data.

Speed: ``learn`` (split, sampling, leakage check, feature selection with permutation and
stability, fit with early stopping, calibration, evaluation) plus the HTML/JSON report on
a synthetic table of 1M time-ordered examples with 50 candidate features (numeric,
correlated, missing, noise, categorical). Target ≤ 60 s.

Quality: the product end to end on simulator data — a project as ``clickloop init`` writes
it, events batch-imported, URL knowledge learned, the ``ctr`` model trained with the
template's feature sets (user, session and item history, URL fields, crosses); LightGBM
against the logistic baseline on the same features and test slice, and against the
Bayes-optimal AUC the simulator reports (the ceiling of any model).
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from run import Context

from clickloop.config.ml import ModelConfig
from clickloop.project import Project
from clickloop.simulate import simulate
from clickloop.training import Dataset, learn
from clickloop.training.report import make_figures, write_report

TITLE = "Training (`clickloop train`)"
NOTES = (
    "Speed: 1M synthetic examples × 50 candidate features through the whole learning path "
    "(selection with permutation and stability checks, LightGBM with early stopping, "
    "calibration, evaluation, report), median of runs; the baseline is the bare LightGBM fit "
    "of the same rows and features measured in the same run. Quality: the `ctr` model of "
    "the `clickloop init` template trained end to end (lake, URL knowledge, feature sets, "
    "selection) on 600k simulated events; AUC on the latest 20% of impressions (time "
    "split), LightGBM vs the logistic baseline on the same features, and the share of the "
    "gap between chance (0.5) and the simulator's Bayes-optimal AUC that each closes."
)


def synthetic(n: int, d: int = 50, seed: int = 0) -> tuple[pa.Table, list[str]]:
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {}
    z = rng.normal(size=(n, 8))
    logit = -3.0 + z[:, :8] @ np.linspace(0.9, 0.1, 8)
    names = []
    for j in range(30):  # informative, correlated copies, weak and noise
        base = z[:, j % 8]
        x = base + rng.normal(scale=0.3 + 0.2 * (j // 8), size=n) if j >= 8 else base
        if j % 7 == 3:
            x = np.where(rng.random(n) < 0.2, np.nan, x)
        cols[f"num_{j}"] = x.astype(np.float32)
        names.append(f"num_{j}")
    for j in range(10):
        cols[f"noise_{j}"] = rng.normal(size=n).astype(np.float32)
        names.append(f"noise_{j}")
    for j in range(d - 40):
        k = [4, 12, 40, 200, 8][j % 5]
        codes = rng.integers(0, k, n)
        effect = rng.normal(scale=0.4 if j < 5 else 0.0, size=k)
        logit += effect[codes]
        cols[f"cat_{j}"] = pa.array(np.char.add("v", codes.astype(str)))
        names.append(f"cat_{j}")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    t0 = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1e6)
    ts = np.sort(rng.integers(t0, t0 + 14 * 86_400_000_000, n))
    table = pa.table(
        {
            "example_id": pa.array(np.arange(n).astype(str)),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "user_id": pa.array(np.char.add("u", (np.arange(n) % 50_000).astype(str))),
            "label": y,
            **cols,
        }
    )
    return table, names


BENCH_CFG = {
    "examples": "type = 'impression'",
    "label": {"event": "type = 'click'", "within": "30m"},
    "split": {"test": 0.2, "validation": 0.1, "gap": "1h"},
    "sampling": {"negatives": 0.25},
}


def _speed(ctx: Context, n: int) -> list[dict]:
    table, names = synthetic(n)
    cfg = ModelConfig.model_validate(BENCH_CFG)
    runs, base_runs = [], []
    out = ctx.scratch("train-report")
    learned = None
    for _ in range(1 if ctx.quick else 3):
        t0 = time.perf_counter()
        learned = learn(Dataset(table, names), cfg, name="bench")
        report = {
            "model": "bench",
            "version": None,
            "project": "bench",
            "created_at": "",
            "algorithm": "lightgbm",
            "params": learned.params,
            "data": {},
            "split": learned.split.describe(),
            "sampling": learned.sample.steps,
            "calibration": learned.model.calibrator.to_dict(),
            "threshold": {"how": learned.threshold_how},
            "test": learned.metrics,
            "validation": learned.valid_metrics,
            "baseline": learned.baseline,
            "curves": learned.curves,
            "slices": {},
            "champion": None,
            "gates": None,
            "selection": learned.selection.rows,
            "importances": learned.importances,
            "search": [],
            "timings": learned.timings,
        }
        write_report(report, out, figures=make_figures(report))
        runs.append(time.perf_counter() - t0)
        # baseline: the bare library fit on the same rows, features and rounds
        import lightgbm as lgb

        matrix = learned.model.preprocessor.transform(table.take(pa.array(learned.sample.index)))
        y = table.column("label").to_numpy()[learned.sample.index]
        cats = learned.model.preprocessor.categorical
        t1 = time.perf_counter()
        lgb.train(
            {
                "objective": "binary",
                "verbosity": -1,
                "learning_rate": 0.08,
                "num_leaves": 31,
                "max_bin": 127,
            },
            lgb.Dataset(matrix, y, categorical_feature=cats),
            num_boost_round=max(learned.model.estimator.best_iteration_ or 100, 1),
        )
        base_runs.append(time.perf_counter() - t1)
    med = statistics.median(runs)
    assert learned is not None
    kept = len(learned.model.features)
    return [
        {
            "name": f"learn + report, {n:,} examples × 50 features ({kept} kept)",
            "median": med,
            "unit": "s",
            "fmt": "{:,.1f}",
            "runs": runs,
            "baseline": statistics.median(base_runs),
            "baseline_name": "bare LightGBM fit",
            "ratio": med / statistics.median(base_runs),
            "target": "≤ 60 s for 1M × 50",
            "ok": (med <= 60) if n >= 1_000_000 else None,
            "stages": learned.timings,
        }
    ]


def _quality(ctx: Context, events_n: int) -> list[dict]:
    """The product end to end on simulator data: a project as `clickloop init` writes it,
    the events batch-imported into the lake, URL knowledge learned from it, and the `ctr`
    model trained with its default feature sets — LightGBM, and the same configuration with
    the logistic baseline."""
    from clickloop.config.template import PROJECT_YAML
    from clickloop.ingest.batch import import_files
    from clickloop.training import train
    from clickloop.urls.sources import learn_lake

    sim = ctx.scratch("sim")
    summary = simulate(sim, events=events_n, days=7, seed=7, malformed=0.0)
    bayes = summary["bayes_auc"]["click"]
    proj_dir = ctx.scratch("proj")
    (proj_dir / "clickloop.yaml").write_text(PROJECT_YAML.format(name="bench"))
    project = Project.load(proj_dir)
    import_files(project, [str(sim / "events")])
    learn_lake(project)
    ctr = project.config.models["ctr"]
    project.config.models["ctr_logistic"] = ctr.model_copy(
        update={"algorithm": ctr.algorithm.model_copy(update={"type": "logistic", "params": {}})}
    )
    aucs: dict[str, float] = {}
    examples = 0
    for name, algo in (("ctr", "lightgbm"), ("ctr_logistic", "logistic")):
        result = train(project, name, register=False)
        aucs[algo] = result.metrics["roc_auc"]
        aucs[algo + "_ece"] = result.metrics["ece"]
        examples = result.report["data"]["examples"]
    out = []
    gap = bayes - 0.5
    out.append(
        {
            "name": f"ROC-AUC on simulator clicks ({examples:,} impressions, the init "
            "template's ctr model), LightGBM",
            "median": aucs["lightgbm"],
            "fmt": "{:.4f}",
            "runs": [aucs["lightgbm"]],
            "baseline": aucs["logistic"],
            "baseline_name": "logistic regression, same features",
            "target": f"above the logistic baseline, below the Bayes-optimal {bayes:.4f}",
            "ok": aucs["logistic"] < aucs["lightgbm"] < bayes,
        }
    )
    out.append(
        {
            "name": "share of the chance → Bayes-optimal AUC gap closed (LightGBM)",
            "median": (aucs["lightgbm"] - 0.5) / gap,
            "fmt": "{:.1%}",
            "runs": [(aucs["lightgbm"] - 0.5) / gap],
            "baseline": (aucs["logistic"] - 0.5) / gap,
            "baseline_name": "logistic",
            "target": "reported",
            "ok": None,
        }
    )
    out.append(
        {
            "name": "expected calibration error on the unsampled test slice (negatives at 0.25)",
            "median": aucs["lightgbm_ece"],
            "fmt": "{:.4f}",
            "runs": [aucs["lightgbm_ece"]],
            "target": "≤ 0.01",
            "ok": aucs["lightgbm_ece"] <= 0.01,
        }
    )
    (ctx.work / "quality.json").write_text(json.dumps(aucs))
    return out


def run(ctx: Context) -> list[dict]:
    results = _speed(ctx, 200_000 if ctx.quick else 1_000_000)
    results += _quality(ctx, 200_000 if ctx.quick else 600_000)
    return results
