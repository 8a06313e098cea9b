"""Hyperparameter search, other estimators by import path, and the scoring artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clickloop.config.ml import ModelConfig
from clickloop.errors import ConfigError, DataError, InvalidInputError
from clickloop.training import Dataset, ScoringModel, learn
from tests.unit.training.test_selection import CFG, synthetic


@pytest.mark.parametrize("method", ["random", "optuna"])
def test_search_tries_the_space_on_validation_and_keeps_the_best(method):
    cfg = ModelConfig.model_validate({**CFG, "algorithm": {"params": {"num_threads": 1},
        "search": {"trials": 4, "method": method,
                   "space": {"num_leaves": {"low": 4, "high": 64, "integer": True},
                             "learning_rate": [0.05, 0.2]}}}})  # fmt: skip
    learned = learn(Dataset(synthetic(20_000), ["signal", "segment", "noise"]), cfg, name="t")
    assert len(learned.trials) == 4
    best = max(learned.trials, key=lambda t: t["score"])
    assert best["best"] and learned.params["num_leaves"] == best["params"]["num_leaves"]
    assert all(4 <= t["params"]["num_leaves"] <= 64 for t in learned.trials)
    assert all(t["params"]["learning_rate"] in (0.05, 0.2) for t in learned.trials)
    # the search scores on validation: its best score is not the test AUC
    assert best["score"] != pytest.approx(learned.metrics["roc_auc"], abs=1e-12)


def test_any_sklearn_estimator_by_import_path(tmp_path: Path):
    cfg = ModelConfig.model_validate(
        {
            **CFG,
            "algorithm": {
                "type": "sklearn.ensemble:HistGradientBoostingClassifier",
                "params": {"max_iter": 50},
            },
        }
    )
    learned = learn(Dataset(synthetic(20_000), ["signal", "segment"]), cfg, name="t")
    assert learned.metrics["roc_auc"] > 0.7
    learned.model.save(tmp_path / "m")
    loaded = ScoringModel.load(tmp_path / "m")
    table = synthetic(500, seed=9)
    assert np.allclose(loaded.predict_proba(table), learned.model.predict_proba(table))
    assert (tmp_path / "m" / "model.joblib").exists()


def test_unknown_estimators_and_bad_inputs_are_named():
    with pytest.raises(ConfigError, match="cannot import 'Nope'"):
        cfg = ModelConfig.model_validate(
            {**CFG, "algorithm": {"type": "sklearn.linear_model:Nope"}}
        )
        learn(Dataset(synthetic(5000), ["signal"]), cfg, name="t")
    with pytest.raises(ValueError, match="is not an algorithm"):
        ModelConfig.model_validate({**CFG, "algorithm": {"type": "xgb boost"}})


def test_artifacts_are_verified_and_inputs_checked(tmp_path: Path):
    cfg = ModelConfig.model_validate({**CFG, "algorithm": {"type": "logistic"}})
    learned = learn(Dataset(synthetic(10_000), ["signal", "segment"]), cfg, name="t")
    learned.model.save(tmp_path / "m")
    with pytest.raises(InvalidInputError, match="lacks 1 feature column"):
        learned.model.predict_proba(synthetic(10).drop(["segment"]))
    (tmp_path / "m" / "preprocess.json").write_text("{}")
    with pytest.raises(DataError, match="corrupt"):
        ScoringModel.load(tmp_path / "m")


def test_kfold_scores_every_development_row_out_of_fold_and_keeps_the_test_slice():
    cfg = ModelConfig.model_validate(
        {
            **CFG,
            "split": {"by": "kfold", "folds": 3, "test": 0.2, "gap": "10m"},
            "algorithm": {"params": {"num_threads": 1}},
        }
    )
    data = Dataset(synthetic(20_000), ["signal", "segment"])
    learned = learn(data, cfg, name="t")
    assert len(learned.split.folds) == 3
    assert len(learned.valid_scores) == len(learned.split.train)  # out-of-fold, all dev rows
    assert learned.valid_metrics["roc_auc"] > 0.7 and learned.metrics["roc_auc"] > 0.7
    assert set(learned.split.test).isdisjoint(learned.split.train)
