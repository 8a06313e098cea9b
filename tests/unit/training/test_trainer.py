"""train(): examples → features → model → report → registry, then champion, gates, rollback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from clickloop.errors import ConflictError
from clickloop.registry import load_model, open_registry
from clickloop.training import promote, train
from clickloop.urls import load_knowledge
from tests.unit.training.conftest import RICH_MODEL, history_features, write_project

pytestmark = pytest.mark.slow

WEAK_MODEL = """\
    examples: "type = 'impression'"
    label: {event: "type = 'click'", match: [user_id, props.item_id], within: 30m}
    context: [props.position]
    split: {by: time, test: 25%, validation: 20%, gap: 30m}
    gates: {metric: roc_auc, min_gain: 0.001, max_slice_regression: 0.01}
"""


@pytest.fixture
def rich(tmp_path: Path, sim_medium):
    _, events = sim_medium
    project = write_project(tmp_path / "p", RICH_MODEL + "    sampling: {negatives: 0.3}\n")
    return project, events, history_features(events, load_knowledge(project))


def test_train_registers_a_version_with_lineage_and_a_report(rich):
    project, events, fn = rich
    result = train(project, "ctr", events=events, feature_fn=fn, promote=True)
    assert result.version == 1 and result.promoted
    s = result.summary()
    # a real model: well above the constant baseline, below the simulator's ceiling
    assert 0.62 < s["test"]["roc_auc"] < 0.83
    assert s["test"]["log_loss"] < s["baseline"]["log_loss"]
    html = result.report_html.read_text()
    assert html.count("<svg") >= 6 and "Feature selection" in html and "Slices" in html
    assert not re.search(r"(src|href)=.https?://", html)  # no fetch: it opens from a file
    report = json.loads(result.report_json.read_text())
    assert report["test"]["roc_auc"] == s["test"]["roc_auc"]
    assert {"host", "item__category", "user_kind"} <= set(report["slices"])
    with open_registry(project) as reg:
        mv = reg.resolve("ctr@champion")
        assert mv.version == 1 and set(mv.aliases) == {"champion", "challenger"}
        lin = mv.lineage
        assert lin["data"]["fingerprint"] == mv.fingerprint and lin["data"]["examples"] > 10_000
        assert lin["url_knowledge"] and lin["features"] == {"hist": "undefined"}
        assert lin["libraries"]["lightgbm"] and lin["code"]["clickloop"]
        assert mv.metrics["test"]["roc_auc"] == s["test"]["roc_auc"]
        art = reg.download(mv, project.state_path("x"))
    assert (art / "model.txt").read_text().startswith("tree")  # LightGBM's own format
    assert {"preprocess.json", "calibration.json", "model.json", "report.html"} <= {
        p.name for p in art.iterdir()
    }
    # the loader scores with no feature code of its own: same numbers as in training
    model = load_model(project, "ctr@champion")
    test = pq.read_table(art / "test_examples.parquet")
    from clickloop.training.scoring import score_examples

    again = score_examples(project, model, test, feature_fn=fn)
    assert np.allclose(again, test.column("score").to_numpy(), atol=1e-9)


def test_same_data_config_and_seed_give_the_same_model(rich, tmp_path: Path):
    project, events, fn = rich
    a = train(
        project, "ctr", events=events, feature_fn=fn, register=False, report_dir=tmp_path / "a"
    )
    b = train(
        project, "ctr", events=events, feature_fn=fn, register=False, report_dir=tmp_path / "b"
    )
    a.learned.model.estimator.save(tmp_path / "a")
    b.learned.model.estimator.save(tmp_path / "b")
    assert (tmp_path / "a" / "model.txt").read_bytes() == (
        tmp_path / "b" / "model.txt"
    ).read_bytes()
    assert a.metrics == b.metrics
    c = train(
        project,
        "ctr",
        events=events,
        feature_fn=fn,
        register=False,
        seed=99,
        report_dir=tmp_path / "c",
    )
    c.learned.model.estimator.save(tmp_path / "c")
    assert (tmp_path / "c" / "model.txt").read_bytes() != (
        tmp_path / "a" / "model.txt"
    ).read_bytes()


def test_a_worse_challenger_is_gated_then_forced_then_rolled_back(tmp_path: Path, sim_medium):
    _, events = sim_medium
    project = write_project(
        tmp_path / "p",
        RICH_MODEL + "    gates: {metric: roc_auc, min_gain: 0.001, max_slice_regression: 0.01}\n",
    )
    fn = history_features(events, load_knowledge(project))
    first = train(project, "ctr", events=events, feature_fn=fn, promote=True)
    assert first.promoted
    # the same model without its features: registered as challenger, refused as champion
    weak = write_project(tmp_path / "p", WEAK_MODEL)
    second = train(weak, "ctr", events=events, feature_fn=fn, promote=True)
    assert second.version == 2 and not second.promoted
    assert (
        second.champion["version"] == 1 and second.champion["roc_auc"] > second.metrics["roc_auc"]
    )
    assert second.gates["passed"] is False
    failed = [c for c in second.gates["checks"] if not c["passed"]]
    assert any(c["check"].startswith("roc_auc gain") for c in failed)
    assert any(c["check"].startswith("slice ") for c in failed)
    with pytest.raises(ConflictError, match="does not pass the promotion gates"):
        promote(weak, "ctr:2", feature_fn=fn)
    out = promote(weak, "ctr:2", force=True, feature_fn=fn)
    assert out["forced"] and out["previous"] == 1
    with open_registry(weak) as reg:
        assert reg.resolve("ctr").version == 2
        reg.rollback("ctr", reason="worse")
        assert reg.resolve("ctr").version == 1
        kinds = [e.kind for e in reg.history("ctr", "champion")]
    assert kinds == ["promote", "promote", "rollback"]
