"""``clickloop urls learn`` reading the raw lake (events imported by the batch importer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from clickloop.cli.app import main
from clickloop.ingest.batch import import_files
from clickloop.project import Project


@pytest.fixture(scope="module")
def lake_project(tmp_path_factory: pytest.TempPathFactory, sim_small: Path) -> Path:
    root = tmp_path_factory.mktemp("urls-lake")
    (root / "clickloop.yaml").write_text("project: shop\n")
    import_files(Project.load(root), [str(sim_small / "events")])
    return root


def _learn(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    rc = main(["--json", *args])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else {}


def test_learn_from_the_lake_equals_learning_from_the_files(
    lake_project: Path, sim_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, report = _learn(capsys, "-p", str(lake_project), "urls", "learn", "--dry-run")
    assert rc == 0, report
    assert report["source"] == "the raw lake"
    summary = json.loads((sim_small / "truth" / "summary.json").read_text())
    # the lake holds the valid events only: no malformed or duplicate records
    assert 0 < report["urls"] < summary["records"]

    other = tmp_path / "files"
    other.mkdir()
    (other / "clickloop.yaml").write_text("project: shop\n")
    rc, from_files = _learn(
        capsys, "-p", str(other), "urls", "learn", "--input", str(sim_small), "--dry-run"
    )
    assert rc == 0
    learned = {h["host"]: h["new"] for h in report["hosts"]}  # every template is new here
    assert learned == {h["host"]: h["new"] for h in from_files["hosts"]}
    assert report["version"] == from_files["version"]


def test_learn_from_a_time_range_of_the_lake(
    lake_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = str(lake_project)
    rc, everything = _learn(capsys, "-p", p, "urls", "learn", "--dry-run")
    rc2, day = _learn(
        capsys, "-p", p, "urls", "learn", "--dry-run",
        "--since", "2026-11-02", "--until", "2026-11-03",
    )  # fmt: skip
    assert rc == rc2 == 0
    assert 0 < day["urls"] < everything["urls"] / 2


def test_learn_writes_the_project_knowledge_file(
    lake_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, report = _learn(capsys, "-p", str(lake_project), "urls", "learn")
    assert rc == 0
    kb = yaml.safe_load((lake_project / "urls" / "knowledge.yaml").read_text())
    assert kb["version"] == report["version"]
    assert "shop.example.com" in kb["hosts"]


def test_an_empty_lake_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "clickloop.yaml").write_text("project: empty\n")
    assert main(["-p", str(tmp_path), "urls", "learn"]) == 2
    err = capsys.readouterr().err
    assert "no URLs found in the raw lake" in err and "--input" in err
