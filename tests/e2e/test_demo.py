"""`clickloop demo` end to end, as `make demo` runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _demo(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clickloop.cli", "--json", "demo", "--dir", str(directory),
         "--events", "20000"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_demo_runs_the_loop_and_every_record_matches_the_truth(tmp_path: Path):
    proc = _demo(tmp_path / "d")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    steps = {s["step"]: s for s in result["steps"]}
    assert steps["simulate traffic"]["records"] == 20000
    batch = steps["batch import into the raw lake"]
    assert batch["balanced"] and batch["accepted"] > 10_000
    urls = steps["learn what the URLs mean"]
    assert urls["hosts"] == 4 and urls["templates"] >= 8
    assert urls["example"]["fields"]["category"] == "clothes"  # the 1 in /items/1/1234
    offline = steps["features: backfill offline, materialise online"]
    assert all(m["rows"] > 0 for m in offline["materialized"])
    live = steps["live traffic: collector → bus → lake and streaming features"]
    assert live["collector"]["accepted"] > 1000
    assert (
        live["ingest"]["accepted"] + live["ingest"]["duplicates"] == live["collector"]["accepted"]
    )
    assert live["features"]["messages"] == live["collector"]["accepted"]
    parity = live["parity"]  # stream vs batch as of the stream's clock, per active user
    assert parity["entities"] > 20 and parity["values"] > 100
    # every difference is explained by events that came later than allowed_lateness
    assert len(parity["differ"]) <= sum(parity["too_late"].values())
    reconcile = steps["reconcile every record with the simulator's truth"]
    assert reconcile["matches_truth"] is True
    trained = steps["train, register and promote the ctr model"]
    assert trained["promoted"] and trained["version"] == 1
    assert 0.6 < trained["test"]["roc_auc"] < 0.9
    assert Path(trained["report"]).is_file()


def test_demo_starts_fresh_on_a_second_run_and_refuses_a_foreign_project(tmp_path: Path):
    d = tmp_path / "d"
    assert _demo(d).returncode == 0
    again = _demo(d)  # same directory: its state is reset, so the truth matches again
    assert again.returncode == 0, again.stderr
    steps = {s["step"]: s for s in json.loads(again.stdout)["steps"]}
    assert steps["reconcile every record with the simulator's truth"]["matches_truth"] is True
    other = tmp_path / "shop"
    other.mkdir()
    (other / "clickloop.yaml").write_text("project: shop\n")
    refused = _demo(other)
    assert refused.returncode == 2
    assert "not a demo project" in json.loads(refused.stdout)["message"]
