# ruff: noqa: N806  (X is the conventional name of a feature matrix)
"""Learning from a prepared table: split, sample, select, search, fit, calibrate, evaluate.

This is the part of training that needs no project: a time-ordered Arrow table
of examples with their label and candidate feature columns in, a scoring model
and every measurement out. :func:`clickloop.training.train` wraps it with
examples, the point-in-time feature join, the report and the registry.

>>> data = Dataset(table, candidates=["ctx__position", "user_activity__count_1d"])
>>> learned = learn(data, model_config, name="ctr")                # doctest: +SKIP
>>> learned.metrics["roc_auc"]
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clickloop.config.ml import ModelConfig
from clickloop.errors import ConfigError, InvalidInputError
from clickloop.training import metrics as mt
from clickloop.training.calibration import Calibrator
from clickloop.training.estimators import Estimator, make_estimator
from clickloop.training.examples import LABEL, TS
from clickloop.training.model import ScoringModel
from clickloop.training.preprocess import Preprocessor, unsupported_reason
from clickloop.training.sampling import Sample, sample_training
from clickloop.training.search import search
from clickloop.training.selection import Selection, check_leakage, select
from clickloop.training.split import Split, time_split

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """Time-ordered examples (``ts``, ``label``, entity, …) with candidate feature columns."""

    table: pa.Table
    candidates: list[str]
    crosses: list[tuple[str, str, str]] = field(default_factory=list)  # (name, feature, key)

    @property
    def y(self) -> np.ndarray:
        return np.asarray(self.table.column(LABEL).to_numpy(zero_copy_only=False), np.int8)

    @property
    def ts_us(self) -> np.ndarray:
        return np.asarray(pc.cast(self.table.column(TS), pa.int64()).to_numpy())


@dataclass
class Learned:
    model: ScoringModel
    split: Split
    sample: Sample
    selection: Selection
    threshold_how: str
    valid_scores: np.ndarray
    test_scores: np.ndarray
    metrics: dict[str, Any]
    valid_metrics: dict[str, Any]
    baseline: dict[str, Any]
    curves: dict[str, Any]
    importances: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    timings: dict[str, float]
    params: dict[str, Any]


class _Clock:
    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.t, 3)
        self.t = now


def learn(data: Dataset, cfg: ModelConfig, *, name: str, threads: int = 0) -> Learned:
    """Fit and evaluate the model ``cfg`` describes on ``data``."""
    clock = _Clock()
    table, y, seed = data.table, data.y, cfg.seed
    if len(y) and y.min() == y.max():
        raise InvalidInputError(
            f"all {len(y)} examples have label {int(y[0])}: nothing to learn",
            hint="check the label's event filter, match keys and horizon",
        )
    split = time_split(data.ts_us, cfg.split, within=cfg.label.within)
    entity = (
        table.column(cfg.entity).to_numpy(zero_copy_only=False)
        if cfg.entity in table.column_names
        else None
    )
    strata = {}
    for c in cfg.sampling.stratify:
        if c not in table.column_names:
            raise ConfigError(
                f"sampling.stratify: no column {c!r} in the examples",
                hint=f"available: {', '.join(table.column_names)}",
            )
        strata[c] = np.asarray(table.column(c).to_numpy(zero_copy_only=False)).astype(str)

    # candidates: unusable types are reported, not silently skipped
    rows_unsupported = []
    usable = []
    for c in data.candidates:
        reason = unsupported_reason(table.column(c).type)
        if reason and not any(c == f for _, f, _k in data.crosses):
            rows_unsupported.append(
                {"feature": c, "kind": str(table.column(c).type), "kept": False, "reason": reason}
            )
        elif not reason:
            usable.append(c)
    for cname, feat, key in data.crosses:
        for col in (feat, key):
            if col not in table.column_names:
                raise ConfigError(
                    f"crosses.{cname}: no column {col!r} among the features",
                    hint=f"candidates: {', '.join(data.candidates)}",
                )

    sample = sample_training(split.train, y, entity, strata, cfg.sampling, seed=seed)
    train_t = table.take(pa.array(sample.index))
    pre_all = Preprocessor.fit(train_t, usable, encoding="native", crosses=data.crosses)
    X_tr = pre_all.transform(train_t)
    y_tr = y[sample.index]
    sel_valid = split.folds[-1][1]
    X_va = pre_all.transform(table.take(pa.array(sel_valid)))
    clock.lap("prepare")
    aucs = check_leakage(
        X_tr[: min(len(y_tr), cfg.selection.sample)],
        y_tr[: min(len(y_tr), cfg.selection.sample)],
        pre_all,
        cfg.selection,
    )
    est = make_estimator(cfg.algorithm, seed=seed, threads=threads)
    linear = est.encoding == "onehot"
    if cfg.selection.enabled:
        selection = select(
            X_tr,
            y_tr,
            X_va,
            y[sel_valid],
            pre_all,
            cfg.selection,
            linear=linear,
            seed=seed,
            aucs=aucs,
            threads=est.num_threads,
        )
    else:
        selection = Selection(
            [s.name for s in pre_all.columns],
            [
                {
                    "feature": s.name,
                    "kind": s.kind,
                    "kept": True,
                    "reason": "kept (selection off)",
                    "single_auc": aucs.get(s.name),
                }
                for s in pre_all.columns
            ],
        )
    selection.rows = rows_unsupported + selection.rows
    if not selection.kept:
        raise InvalidInputError(
            "feature selection kept no feature",
            hint="loosen models.<name>.selection or add features",
        )
    clock.lap("selection")

    kept = set(selection.kept)
    plain = [c for c in usable if c in kept]
    crosses = [x for x in data.crosses if x[0] in kept]
    pre = Preprocessor.fit(
        train_t, plain, encoding="native" if not linear else "onehot", crosses=crosses
    )
    names = pre.output_names
    X_tr = pre.transform(train_t)
    del train_t

    def matrix(idx: np.ndarray) -> np.ndarray:
        return pre.transform(table.take(pa.array(idx)))

    trials: list[dict[str, Any]] = []
    params = dict(cfg.algorithm.params)
    if cfg.algorithm.search is not None:
        sc = cfg.algorithm.search
        folds = [(sample.index, split.folds[0][1])] if cfg.split.by == "time" else split.folds

        def objective(p: dict[str, Any]) -> float:
            scores = []
            for tr, va in folds:
                s = (
                    sample
                    if cfg.split.by == "time"
                    else sample_training(tr, y, entity, strata, cfg.sampling, seed=seed)
                )
                Xa = X_tr if cfg.split.by == "time" else matrix(s.index)
                Xb = matrix(va)
                e = est.with_params(**p).fit(
                    Xa,
                    y[s.index],
                    weights=s.weights,
                    X_valid=Xb,
                    y_valid=y[va],
                    categorical=pre.categorical,
                    names=names,
                )
                q = Calibrator(rate=s.negative_rate).transform(e.predict(Xb))
                scores.append(_score(sc.metric, y[va], q))
            return float(np.mean(scores))

        best, trials = search(
            objective, sc, cfg.algorithm.type, seed=seed, higher_is_better=sc.metric != "log_loss"
        )
        params.update(best)
        est = est.with_params(**best)
        clock.lap("search")

    # fit: on the training slice (time) or fold by fold, then on all development rows (kfold)
    if cfg.split.by == "time":
        valid_idx = split.valid
        X_valid = matrix(valid_idx)
        est.fit(
            X_tr,
            y_tr,
            weights=sample.weights,
            X_valid=X_valid,
            y_valid=y[valid_idx],
            categorical=pre.categorical,
            names=names,
        )
        raw_valid = est.predict(X_valid)
        rate = sample.negative_rate
    else:
        raw_parts, idx_parts, rounds = [], [], []
        for tr, va in split.folds:
            s = sample_training(tr, y, entity, strata, cfg.sampling, seed=seed)
            Xb = matrix(va)
            e = est.with_params().fit(
                matrix(s.index),
                y[s.index],
                weights=s.weights,
                X_valid=Xb,
                y_valid=y[va],
                categorical=pre.categorical,
                names=names,
            )
            rounds.append(e.best_iteration_ or 0)
            raw_parts.append(e.predict(Xb))
            idx_parts.append(va)
        valid_idx = np.concatenate(idx_parts)
        raw_valid = np.concatenate(raw_parts)
        n_rounds = int(np.median(rounds)) if est.kind == "lightgbm" and any(rounds) else None
        est.fit(
            X_tr,
            y_tr,
            weights=sample.weights,
            categorical=pre.categorical,
            names=names,
            rounds=n_rounds,
        )
        rate = sample.negative_rate
    clock.lap("fit")

    calibrator = Calibrator(rate=rate, method=cfg.algorithm.calibration).fit(
        raw_valid, y[valid_idx]
    )
    p_valid = calibrator.transform(raw_valid)
    threshold, how = mt.choose_threshold(y[valid_idx], p_valid, cfg.threshold)
    p_test = calibrator.transform(est.predict(matrix(split.test)))
    y_test = y[split.test]
    test_metrics = mt.binary_metrics(y_test, p_test, threshold)
    valid_metrics = mt.binary_metrics(y[valid_idx], p_valid, threshold)
    prior = float(y[split.train].mean())
    baseline = mt.binary_metrics(y_test, np.full(len(y_test), prior), threshold)
    baseline["name"] = f"constant: the training positive rate {prior:.4f}"
    curves = mt.curves(y_test, p_test)
    clock.lap("evaluate")

    importances = _importances(est, pre, selection)
    model = ScoringModel(
        name=name,
        estimator=est,
        preprocessor=pre,
        calibrator=calibrator,
        entity=cfg.entity,
        feature_sets=[f for f in cfg.features if f != "request.url"],
        context=list(cfg.context),
        url_fields="request.url" in cfg.features,
        threshold=threshold,
    )
    return Learned(
        model=model,
        split=split,
        sample=sample,
        selection=selection,
        threshold_how=how,
        valid_scores=p_valid,
        test_scores=p_test,
        metrics=test_metrics,
        valid_metrics=valid_metrics,
        baseline=baseline,
        curves=curves,
        importances=importances,
        trials=trials,
        timings=clock.laps,
        params={
            **params,
            **({"best_iteration": est.best_iteration_} if est.best_iteration_ else {}),
        },
    )


def _score(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    if metric == "log_loss":
        return mt.log_loss(y, p)
    if metric == "pr_auc":
        return float(mt.binary_metrics(y, p, 0.5)["pr_auc"] or 0.0)
    return mt.auc(y, p) or 0.5


def _importances(est: Estimator, pre: Preprocessor, selection: Selection) -> list[dict[str, Any]]:
    raw = est.importances()
    out: dict[str, float] = {}
    if raw is not None:
        owners = []
        for s in pre.columns:  # output columns back to their input feature
            width = (
                (len(s.vocab) + 1 if s.kind == "categorical" else 1 + int(s.missing))
                if pre.encoding == "onehot"
                else 1
            )
            owners += [s.name] * width
        for o, v in zip(owners, raw, strict=False):
            out[o] = out.get(o, 0.0) + float(v)
    total = sum(out.values()) or 1.0
    perm = {r["feature"]: r.get("permutation") for r in selection.rows}
    rows = [
        {"feature": k, "importance": v / total, "permutation": perm.get(k)} for k, v in out.items()
    ]
    return sorted(rows, key=lambda r: -r["importance"])
