"""Fixtures for ingestion tests: a project on embedded defaults and small simulated data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clickloop.project import Project


def make_project(root: Path, extra: str = "") -> Project:
    root.mkdir(parents=True, exist_ok=True)
    (root / "clickloop.yaml").write_text("project: test\n" + extra)
    return Project.load(root)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path / "proj")


@pytest.fixture(scope="module")
def sim_formats(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The same 3,000 simulated records as JSONL, gzipped JSONL, CSV and Parquet."""
    from clickloop.simulate import simulate

    out = {}
    for name, fmt, gz in [
        ("jsonl", "jsonl", False),
        ("jsonl.gz", "jsonl", True),
        ("csv", "csv", False),
        ("parquet", "parquet", False),
    ]:
        root = tmp_path_factory.mktemp(name.replace(".", "-"))
        summary = simulate(root, events=3000, days=2, seed=3, fmt=fmt, compress=gz, malformed=0.03)
        out[name] = (root / "events", summary)
    return out
