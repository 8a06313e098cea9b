"""Negative downsampling keeps served probabilities calibrated (prior correction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from clickloop.training import Dataset, build_examples, learn
from clickloop.training.join import join_features
from clickloop.training.metrics import ece
from clickloop.training.sampling import prior_correct
from clickloop.urls import load_knowledge
from tests.unit.training.conftest import RICH_MODEL, history_features, write_project

pytestmark = pytest.mark.slow


def _learn(tmp_path: Path, sim_medium, sampling: str):
    _, events = sim_medium
    # days 3-6: history has built up, so the click rate is stationary enough to calibrate
    model = RICH_MODEL + f"    start: '2026-11-03'\n    sampling: {sampling}\n"
    project = write_project(tmp_path, model)
    cfg = project.config.models["ctr"]
    kb = load_knowledge(project)
    ex = build_examples(project, "ctr", events=events)
    table, cands, crosses = join_features(
        project, cfg, ex.table, feature_fn=history_features(events, kb), knowledge=kb
    )
    data = Dataset(table, cands, crosses)
    learned = learn(data, cfg, name="ctr")
    return learned, table.take(pa.array(learned.split.test)), data.y[learned.split.test]


def test_downsampled_model_is_calibrated_on_the_unsampled_holdout(tmp_path: Path, sim_medium):
    learned, test, y = _learn(tmp_path, sim_medium, "{negatives: 0.1}")
    assert learned.sample.negative_rate == 0.1 and learned.model.calibrator.rate == 0.1
    kept = learned.sample.steps[-1]
    assert kept["rate"] > 2 * learned.sample.steps[0]["rate"]  # positives are over-represented
    t = learned.metrics
    assert t["examples"] == len(y) and t["ece"] <= 0.01, t["ece"]
    assert abs(t["mean_score"] - t["rate"]) < 0.01
    # the same model without the correction is far off: the correction is what calibrates
    raw = learned.model.estimator.predict(learned.model.preprocessor.transform(test))
    assert ece(y, raw) > 0.05
    assert np.allclose(learned.model.predict_proba(test), learned.test_scores)


def test_class_weights_are_corrected_the_same_way(tmp_path: Path, sim_medium):
    learned, _test, _y = _learn(tmp_path, sim_medium, "{class_weight: {0: 1.0, 1: 5.0}}")
    assert learned.model.calibrator.rate == pytest.approx(0.2)
    assert learned.metrics["ece"] <= 0.015


def test_prior_correction_inverts_downsampling():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.001, 0.3, 100_000)
    rate = 0.1
    odds = p / (1 - p) / rate  # odds on the sampled scale are the true odds over the rate
    assert np.allclose(prior_correct(odds / (1 + odds), rate), p)
