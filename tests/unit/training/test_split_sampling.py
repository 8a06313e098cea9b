"""Time split with a gap, purged folds, sampling, thresholds and metrics."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickloop.config.ml import SamplingConfig, SplitConfig
from clickloop.errors import InvalidInputError
from clickloop.training import metrics as mt
from clickloop.training.sampling import cap_per_entity, sample_training
from clickloop.training.split import time_split

MIN = 60_000_000  # one minute in microseconds


@given(
    n=st.integers(200, 3000),
    test=st.floats(0.05, 0.4),
    gap_min=st.integers(0, 120),
    horizon_min=st.integers(1, 90),
    seed=st.integers(0, 2**16),
)
def test_time_split_never_lets_training_labels_reach_the_test_period(
    n, test, gap_min, horizon_min, seed
):
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, 3 * 24 * 60, n)) * MIN
    cfg = SplitConfig(test=test, validation=0.1, gap=timedelta(minutes=gap_min))
    try:
        s = time_split(ts, cfg, within=timedelta(minutes=horizon_min))
    except InvalidInputError:
        return  # too few rows after the gap: refused, with a message
    gap = max(gap_min, horizon_min) * MIN
    t_test = ts[s.test].min()
    assert ts[s.train].max() <= t_test - gap and ts[s.valid].max() < t_test - gap
    assert ts[s.train].max() <= ts[s.valid].min() - gap
    assert len(set(s.train) | set(s.valid) | set(s.test)) == len(s.train) + len(s.valid) + len(
        s.test
    )
    assert len(s.train) + len(s.valid) + len(s.test) + s.dropped_gap == n


def test_kfold_blocks_are_purged_around_each_validation_block():
    ts = np.arange(10_000) * MIN
    s = time_split(
        ts,
        SplitConfig(by="kfold", folds=4, test=0.2, gap=timedelta(minutes=30)),
        within=timedelta(minutes=10),
    )
    assert len(s.folds) == 4
    covered = np.concatenate([va for _, va in s.folds])
    assert np.array_equal(np.sort(covered), s.train)  # every development row scored once
    for tr, va in s.folds:
        lo, hi = ts[va].min(), ts[va].max()
        near = (ts[tr] >= lo - 30 * MIN) & (ts[tr] <= hi + 30 * MIN)
        assert not near.any()


def test_too_little_data_is_refused_with_a_hint():
    with pytest.raises(InvalidInputError, match="too few to split"):
        time_split(np.arange(50) * MIN, SplitConfig(), within=timedelta(minutes=1))


def test_negative_downsampling_keeps_every_positive_and_the_stated_share():
    rng = np.random.default_rng(1)
    y = (rng.random(200_000) < 0.05).astype(np.int8)
    s = sample_training(np.arange(len(y)), y, None, {}, SamplingConfig(negatives=0.1), seed=3)
    kept = y[s.index]
    assert kept.sum() == y.sum()
    assert abs((kept == 0).sum() / (y == 0).sum() - 0.1) < 0.005
    again = sample_training(np.arange(len(y)), y, None, {}, SamplingConfig(negatives=0.1), seed=3)
    assert np.array_equal(s.index, again.index)


def test_per_entity_caps_limit_heavy_users():
    entity = np.array(["heavy"] * 1000 + [f"u{i}" for i in range(500)])
    keep = cap_per_entity(np.arange(len(entity)), entity, 20, np.random.default_rng(0))
    values, counts = np.unique(entity[keep], return_counts=True)
    assert counts.max() == 20 and len(values) == 501


def test_stratified_downsampling_preserves_the_mix():
    rng = np.random.default_rng(2)
    n = 100_000
    y = (rng.random(n) < 0.1).astype(np.int8)
    host = rng.choice(["a", "b", "c"], n, p=[0.7, 0.2, 0.1])
    cfg = SamplingConfig(max_examples=10_000, stratify=["host"])
    s = sample_training(np.arange(n), y, None, {"host": host}, cfg, seed=0)
    assert abs(len(s.index) - 10_000) < 20
    assert abs(y[s.index].mean() - y.mean()) < 0.002
    for h, share in (("a", 0.7), ("b", 0.2), ("c", 0.1)):
        assert abs((host[s.index] == h).mean() - share) < 0.005


def test_balanced_class_weights_give_the_prior_rate():
    y = np.array([1] * 100 + [0] * 900, np.int8)
    s = sample_training(
        np.arange(1000), y, None, {}, SamplingConfig(class_weight="balanced"), seed=0
    )
    assert s.weights is not None and s.negative_rate == pytest.approx(100 / 900)


def test_thresholds_are_chosen_as_documented():
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    t, how = mt.choose_threshold(y, p, "f1")
    assert t == pytest.approx(0.4) and "F1" in how
    m = mt.at_threshold(y, p, t)
    assert m["confusion"] == {"tp": 4, "fp": 1, "fn": 0, "tn": 3}
    assert mt.choose_threshold(y, p, 0.65)[0] == 0.65


def test_perfectly_calibrated_scores_have_small_ece_and_lift_sums_up():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.3, 200_000)
    y = (rng.random(len(p)) < p).astype(np.int8)
    assert mt.ece(y, p) < 0.004
    assert mt.ece(y, np.clip(p * 2, 0, 1)) > 0.1
    lift = mt.lift_table(y, p)
    assert lift[-1]["gain"] == pytest.approx(1.0) and lift[0]["lift"] > 1.5
    m = mt.binary_metrics(y, p, 0.2)
    assert 0.6 < m["roc_auc"] < 0.8 and m["examples"] == len(y)
