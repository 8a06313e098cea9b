"""Evaluation measures for binary scores: the numbers a report shows and gates compare.

>>> m = binary_metrics(y, p, threshold=0.2)                      # doctest: +SKIP
>>> sorted(m)[:4]
['accuracy', 'brier', 'confusion', 'ece']
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

EPS = 1e-15
HIGHER_IS_BETTER = {
    "roc_auc": True,
    "pr_auc": True,
    "log_loss": False,
    "brier": False,
    "ece": False,
    "f1": True,
    "accuracy": True,
    "precision": True,
    "recall": True,
}


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC, or None when only one class is present."""
    if len(y) == 0 or y.min() == y.max():
        return None
    return float(roc_auc_score(y, p))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def ece(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error over equal-mass bins (|mean score − positive rate|)."""
    if len(y) == 0:
        return math.nan
    order = np.argsort(p, kind="stable")
    total = 0.0
    for part in np.array_split(order, min(bins, len(y))):
        total += len(part) * abs(float(p[part].mean()) - float(y[part].mean()))
    return total / len(y)


def at_threshold(y: np.ndarray, p: np.ndarray, t: float) -> dict[str, Any]:
    pred = p >= t
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(len(y) - tp - fp - fn)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": float(t),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / len(y) if len(y) else math.nan,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """Every scalar measure of scores ``p`` against labels ``y`` (0/1)."""
    y = np.asarray(y, dtype=np.int8)
    p = np.asarray(p, dtype=np.float64)
    both = len(y) > 0 and y.min() != y.max()
    out: dict[str, Any] = {
        "examples": len(y),
        "positives": int(y.sum()),
        "rate": float(y.mean()) if len(y) else math.nan,
        "mean_score": float(p.mean()) if len(p) else math.nan,
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "log_loss": log_loss(y, p),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": ece(y, p),
    }
    out.update(at_threshold(y, p, threshold))
    return out


def choose_threshold(y: np.ndarray, p: np.ndarray, rule: str | float) -> tuple[float, str]:
    """The decision threshold and a sentence on how it was chosen (on validation scores)."""
    if isinstance(rule, float):
        return rule, f"fixed at {rule:g} by configuration"
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(1 - ys)
    last = np.r_[np.nonzero(np.diff(ps))[0], len(ps) - 1]  # cut only between distinct scores
    tp, fp, cut = tp[last], fp[last], ps[last]
    pos = max(int(ys.sum()), 1)
    neg = max(len(ys) - int(ys.sum()), 1)
    if rule == "youden":
        j = tp / pos - fp / neg
        i = int(np.argmax(j))
        return float(
            cut[i]
        ), f"maximises Youden's J (TPR − FPR = {j[i]:.3f}) on the validation slice"
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / pos
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall + EPS), 0)
    i = int(np.argmax(f1))
    return float(cut[i]), f"maximises F1 ({f1[i]:.3f}) on the validation slice"


def curves(y: np.ndarray, p: np.ndarray, points: int = 200) -> dict[str, Any]:
    """ROC, precision-recall, calibration, score distributions and lift/gain, downsampled."""
    y = np.asarray(y, dtype=np.int8)
    p = np.asarray(p, dtype=np.float64)
    out: dict[str, Any] = {}
    if len(y) and y.min() != y.max():
        fpr, tpr, _ = roc_curve(y, p, drop_intermediate=True)
        pick = np.unique(np.linspace(0, len(fpr) - 1, min(points, len(fpr))).astype(int))
        out["roc"] = {"fpr": fpr[pick].tolist(), "tpr": tpr[pick].tolist()}
        order = np.argsort(-p, kind="stable")
        tp = np.cumsum(y[order])
        k = np.arange(1, len(y) + 1)
        pick = np.unique(np.geomspace(1, len(y), points).astype(int) - 1)
        out["pr"] = {
            "recall": (tp[pick] / tp[-1]).tolist(),
            "precision": (tp[pick] / k[pick]).tolist(),
        }
    out["calibration"] = calibration_curve(y, p)
    top = float(np.quantile(p, 0.995)) if len(p) else 1.0
    edges = np.linspace(0.0, max(top, 1e-6), 41)
    edges[-1] = max(float(p.max()) if len(p) else 1.0, edges[-1])  # the tail's last bin
    out["distribution"] = {
        "edges": edges.tolist(),
        "negatives": np.histogram(p[y == 0], edges)[0].tolist(),
        "positives": np.histogram(p[y == 1], edges)[0].tolist(),
    }
    out["lift"] = lift_table(y, p)
    return out


def calibration_curve(y: np.ndarray, p: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    order = np.argsort(p, kind="stable")
    rows = []
    for part in np.array_split(order, min(bins, max(len(y), 1))):
        if len(part):
            rows.append(
                {
                    "mean_score": float(p[part].mean()),
                    "rate": float(y[part].mean()),
                    "examples": len(part),
                }
            )
    return rows


def lift_table(y: np.ndarray, p: np.ndarray, groups: int = 10) -> list[dict[str, float]]:
    """Deciles by score (highest first): rate, lift over the average, cumulative gain."""
    if len(y) == 0:
        return []
    order = np.argsort(-p, kind="stable")
    base = float(y.mean()) or EPS
    total = max(int(y.sum()), 1)
    rows, cum = [], 0
    for i, part in enumerate(np.array_split(order, groups)):
        pos = int(y[part].sum())
        cum += pos
        rate = pos / len(part) if len(part) else 0.0
        rows.append(
            {
                "decile": i + 1,
                "examples": len(part),
                "positives": pos,
                "rate": rate,
                "lift": rate / base,
                "gain": cum / total,
            }
        )
    return rows


def slice_metrics(
    y: np.ndarray,
    p: np.ndarray,
    column: np.ndarray,
    *,
    min_examples: int = 1,
    max_values: int = 30,
    reference: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Measures per value of ``column`` (largest slices first); ``reference`` adds Δ AUC."""
    values = np.asarray(column, dtype=object)
    values = np.where(values == None, "(missing)", values)  # noqa: E711  (object array compare)
    uniq, counts = np.unique(values.astype(str), return_counts=True)
    rows = []
    for v in uniq[np.argsort(-counts, kind="stable")][:max_values]:
        m = values.astype(str) == v
        ys, ps = y[m], p[m]
        row: dict[str, Any] = {
            "value": str(v),
            "examples": int(m.sum()),
            "positives": int(ys.sum()),
            "rate": float(ys.mean()),
            "mean_score": float(ps.mean()),
            "roc_auc": auc(ys, ps),
            "log_loss": log_loss(ys, ps),
            "gated": bool(m.sum() >= min_examples),
        }
        if reference is not None:
            ref = auc(ys, reference[m])
            row["reference_roc_auc"] = ref
            row["delta_roc_auc"] = (
                None if ref is None or row["roc_auc"] is None else row["roc_auc"] - ref
            )
        rows.append(row)
    return rows
