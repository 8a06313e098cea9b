from __future__ import annotations

from clickloop.config.ml import GatesConfig
from clickloop.registry.gates import evaluate_gates


def test_the_challenger_must_beat_the_champion_by_the_margin():
    cfg = GatesConfig(metric="roc_auc", min_gain=0.002, margins={"log_loss": 0.0})
    ok = evaluate_gates(
        {"roc_auc": 0.753, "log_loss": 0.20}, {"roc_auc": 0.750, "log_loss": 0.21}, cfg
    )
    assert ok.passed and len(ok.checks) == 2
    short = evaluate_gates(
        {"roc_auc": 0.751, "log_loss": 0.20}, {"roc_auc": 0.750, "log_loss": 0.21}, cfg
    )
    assert not short.passed and "gain +0.00100, required ≥ +0.002" in short.failures()[0]
    worse_loss = evaluate_gates(
        {"roc_auc": 0.76, "log_loss": 0.22}, {"roc_auc": 0.75, "log_loss": 0.21}, cfg
    )
    assert [c["metric"] for c in worse_loss.checks if not c["passed"]] == ["log_loss"]


def test_no_slice_may_regress_past_the_limit_small_slices_aside():
    cfg = GatesConfig(metric="roc_auc", max_slice_regression=0.01, min_slice_examples=100)
    cand = {
        "host": [
            {"value": "a", "examples": 500, "roc_auc": 0.70},
            {"value": "b", "examples": 500, "roc_auc": 0.80},
            {"value": "tiny", "examples": 20, "roc_auc": 0.10},
        ]
    }
    champ = {
        "host": [
            {"value": "a", "examples": 500, "roc_auc": 0.72},
            {"value": "b", "examples": 500, "roc_auc": 0.79},
            {"value": "tiny", "examples": 20, "roc_auc": 0.90},
        ]
    }
    r = evaluate_gates(
        {"roc_auc": 0.76}, {"roc_auc": 0.75}, cfg, candidate_slices=cand, champion_slices=champ
    )
    failed = [c["slice"] for c in r.checks if not c["passed"]]
    assert failed == ["host=a"] and not r.passed
    assert not any(c.get("slice") == "host=tiny" for c in r.checks)


def test_a_missing_metric_fails_the_gate_rather_than_passing_silently():
    r = evaluate_gates({"roc_auc": None}, {"roc_auc": 0.7}, GatesConfig())
    assert not r.passed and "missing for the candidate" in r.failures()[0]
