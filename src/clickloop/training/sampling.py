"""Sampling the training slice: per-entity caps, stratified downsampling, negative
downsampling, or class weights.

Negative downsampling keeps each negative with probability ``r``; a model
trained on the sample over-estimates the odds by ``1/r``. The rate is stored in
the model and scores are prior-corrected: ``p = r·q / (r·q + 1 − q)`` where
``q`` is the score on the sampled scale. Class weights shift the prior the same
way (weighting negatives by ``w0`` and positives by ``w1`` is, in expectation,
sampling negatives at ``w0/w1``), so they are corrected identically.

>>> s = sample_training(idx, y, entity, {}, SamplingConfig(negatives=0.1), seed=0)
>>> s.negative_rate
0.1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clickloop.config.ml import SamplingConfig


@dataclass
class Sample:
    index: np.ndarray
    weights: np.ndarray | None
    negative_rate: float
    steps: list[dict[str, Any]] = field(default_factory=list)


def sample_training(
    index: np.ndarray,
    y: np.ndarray,
    entity: np.ndarray | None,
    strata: dict[str, np.ndarray],
    cfg: SamplingConfig,
    *,
    seed: int,
) -> Sample:
    """Choose the training rows (positions into the full example arrays) and weights."""
    rng = np.random.default_rng([seed, 0x5A4D])
    keep = np.asarray(index)
    steps: list[dict[str, Any]] = [_step("training slice", keep, y)]
    if cfg.max_per_entity is not None and entity is not None:
        keep = cap_per_entity(keep, entity, cfg.max_per_entity, rng)
        steps.append(_step(f"at most {cfg.max_per_entity} per entity", keep, y))
    if cfg.max_examples is not None and len(keep) > cfg.max_examples:
        keep = stratified(keep, y, strata, cfg.stratify, cfg.max_examples, rng)
        how = f"stratified by label, {', '.join(cfg.stratify)}" if cfg.stratify else "by label"
        steps.append(_step(f"downsampled to {cfg.max_examples:,} ({how})", keep, y))
    rate = 1.0
    weights = None
    if cfg.negatives is not None and cfg.negatives < 1:
        rate = float(cfg.negatives)
        neg = y[keep] == 0
        draw = rng.random(len(keep))
        keep = keep[~neg | (draw < rate)]
        steps.append(_step(f"negatives kept at rate {rate:g}", keep, y))
    elif cfg.class_weight is not None:
        yk = y[keep]
        if cfg.class_weight == "balanced":
            n1 = max(int(yk.sum()), 1)
            n0 = max(len(yk) - n1, 1)
            w0, w1 = len(yk) / (2 * n0), len(yk) / (2 * n1)
        else:
            w0, w1 = float(cfg.class_weight[0]), float(cfg.class_weight[1])
        weights = np.where(yk == 1, w1, w0).astype(np.float64)
        rate = w0 / w1
        steps.append({"step": f"class weights 0: {w0:.4g}, 1: {w1:.4g}", "rows": len(keep)})
    return Sample(np.sort(keep) if weights is None else keep, weights, rate, steps)


def cap_per_entity(
    index: np.ndarray, entity: np.ndarray, cap: int, rng: np.random.Generator
) -> np.ndarray:
    """Keep at most ``cap`` randomly chosen rows per entity value."""
    ent = entity[index]
    _, codes = np.unique(ent, return_inverse=True)
    order = np.lexsort((rng.random(len(index)), codes))
    sorted_codes = codes[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_codes))[0] + 1]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return np.sort(index[order[rank < cap]])


def stratified(
    index: np.ndarray,
    y: np.ndarray,
    strata: dict[str, np.ndarray],
    columns: list[str],
    target: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """About ``target`` rows keeping the share of every (label, columns…) group."""
    keys = [y[index]] + [np.unique(strata[c][index], return_inverse=True)[1] for c in columns]
    _, group = np.unique(np.stack(keys, axis=1), axis=0, return_inverse=True)
    group = group.ravel()
    frac = target / len(index)
    out = []
    for g in range(int(group.max()) + 1):
        members = index[group == g]
        k = max(1, round(len(members) * frac))
        out.append(rng.choice(members, size=min(k, len(members)), replace=False))
    return np.sort(np.concatenate(out))


def prior_correct(q: np.ndarray, rate: float) -> np.ndarray:
    """Map scores learnt on negatives sampled at ``rate`` back to the true prior."""
    if rate == 1.0:
        return q
    q = np.clip(q, 1e-12, 1 - 1e-12)
    return rate * q / (rate * q + 1 - q)


def _step(what: str, keep: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    pos = int(y[keep].sum())
    return {
        "step": what,
        "rows": len(keep),
        "positives": pos,
        "rate": pos / len(keep) if len(keep) else None,
    }
