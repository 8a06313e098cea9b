# ruff: noqa: N803, N806  (X is the conventional name of a feature matrix)
"""Feature selection: filters, embedded methods, stability, and the leakage alarm.

Every candidate ends up in one table row saying whether it is kept and why
not. Filters run first on the training slice (missing rate, variance, binned
single-feature AUC for the leakage alarm, mutual information, correlation
pruning); then embedded methods (an L1 logistic model for linear learners;
LightGBM gain importance checked by permutation on the validation slice),
repeated over time blocks of the training slice so a feature must help in
enough of them (stability).

>>> result = select(X, y, Xv, yv, pre, cfg, linear=False, seed=0)   # doctest: +SKIP
>>> result.kept[:3], result.rows[0]["reason"]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clickloop.config.ml import SelectionConfig
from clickloop.errors import DataError
from clickloop.training.metrics import auc
from clickloop.training.preprocess import Preprocessor

log = logging.getLogger(__name__)

BINS = 32
PERMUTATION_ROWS = 10_000
MIN_GAIN_SHARE = 0.002  # below this share of the total gain a feature is not worth a check


class LeakageError(DataError):
    """A feature predicts the label almost perfectly on its own: probably leaked."""

    code = "leakage"


@dataclass
class Selection:
    kept: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def dropped(self) -> dict[str, str]:
        return {r["feature"]: r["reason"] for r in self.rows if not r["kept"]}


def binned(x: np.ndarray, categorical: bool, bins: int = BINS) -> np.ndarray:
    """Small integer codes: quantile bins (numbers) or codes (categories); 0 = missing."""
    nan = np.isnan(x)
    out = np.zeros(len(x), np.int64)
    if categorical:
        out[~nan] = x[~nan].astype(np.int64) + 1
        return out
    finite = x[~nan]
    if len(finite) == 0:
        return out
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
    out[~nan] = np.searchsorted(edges, finite, side="right") + 1
    return out


def single_feature_auc(codes: np.ndarray, y: np.ndarray) -> float:
    """Out-of-sample AUC of the per-bin positive rate (halves swap roles; order-free)."""
    n = len(y)
    half = np.arange(n) % 2 == 0
    scores = np.empty(n)
    k = int(codes.max()) + 1
    for fit, use in ((half, ~half), (~half, half)):
        pos = np.bincount(codes[fit], weights=y[fit], minlength=k)
        cnt = np.bincount(codes[fit], minlength=k)
        prior = y[fit].mean() if fit.any() else 0.0
        rate = (pos + prior * 5) / (cnt + 5)  # smoothed so rare bins cannot fake signal
        scores[use] = rate[codes[use]]
    a = auc(y, scores)
    return 0.5 if a is None else max(a, 1 - a)


def mutual_information(codes: np.ndarray, y: np.ndarray) -> float:
    """Mutual information (nats) between binned feature and label."""
    k = int(codes.max()) + 1
    joint = np.stack([np.bincount(codes[y == c], minlength=k) for c in (0, 1)], 1).astype(float)
    joint /= joint.sum()
    px, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (px @ py)[nz])).sum())


def check_leakage(
    X: np.ndarray, y: np.ndarray, pre: Preprocessor, cfg: SelectionConfig
) -> dict[str, float]:
    """Single-feature AUC of every column; raise :class:`LeakageError` past the limit."""
    cats = set(pre.categorical)
    aucs = {}
    for i, spec in enumerate(pre.columns):
        aucs[spec.name] = single_feature_auc(binned(X[:, i], i in cats), y)
    leaky = {n: a for n, a in aucs.items() if a > cfg.leakage_auc and n not in cfg.allow_leaky}
    if leaky:
        listing = ", ".join(f"{n} (AUC {a:.4f})" for n, a in sorted(leaky.items()))
        raise LeakageError(
            f"leakage alarm: {listing} predict the label almost perfectly on their own "
            f"(single-feature AUC above selection.leakage_auc = {cfg.leakage_auc})",
            hint="a feature computed after the outcome, or from it, leaks; fix it, or list it "
            "under selection.allow_leaky if it is legitimately that predictive",
            features=leaky,
        )
    return aucs


def select(
    X: np.ndarray,
    y: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    pre: Preprocessor,
    cfg: SelectionConfig,
    *,
    linear: bool,
    seed: int,
    aucs: dict[str, float] | None = None,
    threads: int = 0,
) -> Selection:
    """Choose among ``pre``'s columns (native encoding) from training and validation rows."""
    rng = np.random.default_rng([seed, 0x5E1EC7])
    if len(y) > cfg.sample:
        pick = np.sort(rng.choice(len(y), cfg.sample, replace=False))
        X, y = X[pick], y[pick]
    names = [s.name for s in pre.columns]
    cats = set(pre.categorical)
    aucs = aucs or check_leakage(X, y, pre, cfg)
    rows: dict[str, dict[str, Any]] = {
        n: {"feature": n, "kind": pre.columns[i].kind, "kept": True, "reason": ""}
        for i, n in enumerate(names)
    }
    alive = list(range(len(names)))

    def drop(i: int, reason: str) -> None:
        rows[names[i]]["kept"] = False
        rows[names[i]]["reason"] = reason
        alive.remove(i)

    codes = {}
    for i, n in enumerate(names):
        col = X[:, i]
        nan = np.isnan(col)
        finite = col[~nan]
        codes[i] = binned(col, i in cats)
        r = rows[n]
        r["missing"] = float(nan.mean())
        r["distinct"] = len(np.unique(finite[:50_000])) if len(finite) else 0
        r["variance"] = float(finite.var()) if len(finite) and i not in cats else None
        r["single_auc"] = aucs.get(n)
        r["mutual_info"] = mutual_information(codes[i], y)
        if n in cfg.allow_leaky and aucs.get(n, 0) > cfg.leakage_auc:
            r["note"] = "leaky, acknowledged in selection.allow_leaky"
    if not cfg.enabled:
        return Selection([names[i] for i in alive], [rows[n] for n in names])

    for i in list(alive):
        r = rows[names[i]]
        if r["missing"] > cfg.max_missing:
            drop(i, f"missing: {r['missing']:.1%} of values missing (> {cfg.max_missing:.0%})")
        elif r["distinct"] <= 1:
            drop(i, "constant: a single value")
        elif r["variance"] is not None and r["variance"] <= cfg.min_variance:
            drop(i, f"low_variance: {r['variance']:.3g} ≤ {cfg.min_variance:g}")
        elif cfg.min_mutual_info > 0 and r["mutual_info"] < cfg.min_mutual_info:
            drop(
                i, f"low_mutual_information: {r['mutual_info']:.2g} nats < {cfg.min_mutual_info:g}"
            )
    _prune_correlated(X, alive, names, cats, aucs, cfg, drop)
    if (cfg.l1 if cfg.l1 is not None else linear) and alive:
        _l1(X, y, pre, alive, names, cfg, seed, drop)
    if cfg.importance and alive and len(np.unique(y_valid)) == 2:
        _importance(X, y, X_valid, y_valid, pre, alive, names, rows, cfg, seed, rng, drop, threads)
    if cfg.max_features is not None and len(alive) > cfg.max_features:
        order = sorted(
            alive, key=lambda i: -(rows[names[i]].get("gain") or rows[names[i]]["mutual_info"])
        )
        for i in order[cfg.max_features :]:
            drop(i, f"max_features: outside the {cfg.max_features} most important")
    for i in alive:
        rows[names[i]]["reason"] = "kept"
    return Selection([names[i] for i in alive], [rows[n] for n in names])


def _prune_correlated(X, alive, names, cats, aucs, cfg, drop) -> None:  # type: ignore[no-untyped-def]
    num = [i for i in alive if i not in cats]
    if len(num) < 2:
        return
    sub = X[: min(len(X), 50_000)][:, num]
    ranks = np.empty_like(sub)
    for j in range(sub.shape[1]):  # Spearman: correlation of ranks, missing at the median
        col = sub[:, j]
        col = np.where(np.isnan(col), np.nanmedian(col) if np.isfinite(col).any() else 0, col)
        ranks[:, j] = np.argsort(np.argsort(col, kind="stable"), kind="stable")
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(ranks, rowvar=False))
    order = sorted(range(len(num)), key=lambda j: -aucs.get(names[num[j]], 0.5))
    gone: set[int] = set()
    for a_pos, a in enumerate(order):
        if a in gone:
            continue
        for b in order[a_pos + 1 :]:
            if b not in gone and abs(corr[a, b]) > cfg.max_correlation:
                gone.add(b)
                drop(
                    num[b],
                    f"correlated: |ρ| = {abs(corr[a, b]):.3f} with {names[num[a]]}, "
                    "which predicts better",
                )


def _l1(X, y, pre, alive, names, cfg, seed, drop) -> None:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    sub_pre = pre.subset([names[i] for i in alive])
    sub_pre.encoding = "onehot"
    n = min(len(y), 50_000)
    # re-encode from the native matrix: categories one-hot, numbers standardised
    cols, owner = [], []
    for i in alive:
        x = X[:n, i]
        spec = pre.columns[i]
        if i in set(pre.categorical):
            k = len(spec.vocab) + 1
            oh = np.zeros((n, k), np.float32)
            ok = ~np.isnan(x)
            oh[np.nonzero(ok)[0], x[ok].astype(int)] = 1
            cols.append(oh)
            owner += [i] * k
        else:
            mu = np.nanmean(x) if np.isfinite(x).any() else 0.0
            sd = np.nanstd(x) or 1.0
            cols.append(((np.where(np.isnan(x), mu, x) - mu) / sd).reshape(-1, 1))
            owner.append(i)
    Z = np.hstack(cols)
    lr = LogisticRegression(
        l1_ratio=1.0, C=cfg.l1_c, solver="liblinear", random_state=seed, max_iter=500
    )
    lr.fit(Z, y[:n])
    weight = np.zeros(len(names))
    np.add.at(weight, np.array(owner), np.abs(lr.coef_.ravel()))
    for i in list(alive):
        if weight[i] == 0:
            drop(i, f"l1_zero: an L1 logistic model (C={cfg.l1_c:g}) gives it no weight")


def _importance(X, y, Xv, yv, pre, alive, names, rows, cfg, seed, rng, drop, threads) -> None:  # type: ignore[no-untyped-def]
    import lightgbm as lgb

    cols = list(alive)
    cats = [j for j, i in enumerate(cols) if i in set(pre.categorical)]
    if len(yv) > PERMUTATION_ROWS:
        pick = np.sort(rng.choice(len(yv), PERMUTATION_ROWS, replace=False))
        Xv, yv = Xv[pick], yv[pick]
    Xv = Xv[:, cols]
    blocks = [b for b in np.array_split(np.arange(len(y)), cfg.stability_folds) if len(b)]
    gains = np.zeros((len(blocks), len(cols)))
    perms = np.zeros((len(blocks), len(cols)))
    params = {
        "objective": "binary",
        "learning_rate": 0.15,
        "num_leaves": 15,
        "min_data_in_leaf": 100,
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        "max_bin": 63,
        "max_cat_threshold": 16,
        "metric": "auc",
        "num_threads": threads,
    }
    for f, held_out in enumerate(blocks):
        # each fit leaves one time block out, so "stable" means useful across time
        block = np.setdiff1d(np.arange(len(y)), held_out) if len(blocks) > 1 else held_out
        if y[block].min() == y[block].max():
            continue
        train = lgb.Dataset(
            X[block][:, cols], y[block], categorical_feature=cats, free_raw_data=True
        )
        valid = lgb.Dataset(Xv, yv, reference=train)
        booster = lgb.train(
            params,
            train,
            num_boost_round=100,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(15, verbose=False)],
        )
        it = booster.best_iteration or None
        gains[f] = booster.feature_importance("gain", iteration=it)

        def score(b: Any = booster, it: int | None = it) -> float:
            return auc(yv, np.asarray(b.predict(Xv, num_iteration=it, num_threads=threads))) or 0.5

        base = score()
        share_f = gains[f] / max(gains[f].sum(), 1e-12)
        for j in range(len(cols)):
            if share_f[j] < MIN_GAIN_SHARE:
                continue  # (nearly) unused by the trees: permuting it cannot change much
            saved = Xv[:, j].copy()
            Xv[:, j] = saved[rng.permutation(len(saved))]
            perms[f, j] = base - score()
            Xv[:, j] = saved
    total = gains.sum(1, keepdims=True)
    share = np.divide(gains, total, out=np.zeros_like(gains), where=total > 0)
    passed = (gains > 0) & (perms > cfg.min_permutation_gain)
    for j, i in enumerate(cols):
        r = rows[names[i]]
        r["gain"] = float(share[:, j].mean())
        r["permutation"] = float(perms[:, j].mean())
        r["stability"] = float(passed[:, j].mean())
    for j, i in enumerate(cols):
        r = rows[names[i]]
        if gains[:, j].sum() == 0:
            drop(i, "zero_gain: the trees never split on it")
        elif r["gain"] < MIN_GAIN_SHARE:
            drop(i, f"negligible_gain: {r['gain']:.2%} of the total gain")
        elif r["permutation"] <= cfg.min_permutation_gain:
            drop(
                i,
                f"no_permutation_gain: shuffling it changes validation AUC by "
                f"{r['permutation']:+.5f}",
            )
        elif r["stability"] < cfg.min_stability:
            drop(
                i,
                f"unstable: useful in {r['stability']:.0%} of {len(blocks)} time blocks "
                f"(< {cfg.min_stability:.0%})",
            )
