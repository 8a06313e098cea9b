"""Feature selection: every candidate gets a verdict with a reason; leaks stop training."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from clickloop.config.ml import ModelConfig
from clickloop.training import Dataset, LeakageError, learn


def synthetic(n: int = 40_000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    cat = rng.choice(["a", "b", "c", "d"], n)
    logit = -2.5 + 1.2 * signal + np.where(cat == "a", 0.8, 0.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    ts = [t0 + timedelta(seconds=int(s)) for s in np.sort(rng.uniform(0, 5 * 86400, n))]
    return pa.table({
        "example_id": [f"e{i}" for i in range(n)],
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "user_id": [f"u{i % 3000}" for i in range(n)],
        "label": y,
        "signal": signal,
        "signal_copy": signal * 2 + 1e-6 * rng.normal(size=n),  # ρ = 1 with signal
        "segment": cat,
        "noise": rng.normal(size=n),
        "mostly_missing": np.where(rng.random(n) < 0.99, np.nan, rng.normal(size=n)),
        "constant": np.ones(n),
        "leak": y + 0.01 * rng.normal(size=n),
        "stamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
    })  # fmt: skip


CFG = {
    "examples": "type = 'impression'",
    "label": {"event": "type = 'click'", "within": "30m"},
    "split": {"test": 0.2, "validation": 0.2, "gap": "10m"},
}


def _learn(cands: list[str], **selection) -> object:
    cfg = ModelConfig.model_validate({**CFG, "selection": selection})
    return learn(Dataset(synthetic(), cands), cfg, name="t")


def test_every_candidate_has_a_verdict_and_a_reason():
    cands = ["signal", "signal_copy", "segment", "noise", "mostly_missing", "constant", "stamp"]
    learned = _learn(cands)
    verdicts = {r["feature"]: (r["kept"], r["reason"]) for r in learned.selection.rows}
    assert set(verdicts) == set(cands)
    assert verdicts["signal"][0] and verdicts["segment"][0]
    assert verdicts["signal_copy"] == (False, verdicts["signal_copy"][1])
    assert "correlated" in verdicts["signal_copy"][1] and "signal" in verdicts["signal_copy"][1]
    assert verdicts["mostly_missing"][1].startswith("missing")
    assert verdicts["constant"][1].startswith("constant")
    assert verdicts["noise"][0] is False
    assert verdicts["stamp"][1].startswith("unsupported_type")
    assert learned.model.features == ["signal", "segment"]


def test_a_leaky_feature_fails_training_naming_it():
    with pytest.raises(LeakageError, match=r"leak \(AUC 0\.99\d+\)") as info:
        _learn(["signal", "leak"])
    assert "allow_leaky" in str(info.value)


def test_an_acknowledged_leak_is_kept_and_flagged():
    learned = _learn(["signal", "leak"], allow_leaky=["leak"])
    row = next(r for r in learned.selection.rows if r["feature"] == "leak")
    assert "acknowledged" in row["note"]


def test_max_features_keeps_the_most_important():
    learned = _learn(["signal", "segment", "noise"], max_features=1, min_permutation_gain=-1)
    assert learned.model.features == ["signal"]
    reasons = {r["feature"]: r["reason"] for r in learned.selection.rows}
    assert reasons["segment"].startswith("max_features")


def test_l1_drops_what_a_sparse_linear_model_ignores():
    cfg = ModelConfig.model_validate(
        {
            **CFG,
            "algorithm": {"type": "logistic"},
            "selection": {"l1_c": 0.0005, "importance": False},
        }
    )
    learned = learn(Dataset(synthetic(), ["signal", "noise"]), cfg, name="t")
    reasons = {r["feature"]: r["reason"] for r in learned.selection.rows}
    assert reasons["signal"] == "kept" and reasons["noise"].startswith("l1_zero")
