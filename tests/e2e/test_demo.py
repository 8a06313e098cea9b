"""`clickloop demo` end to end, as `make demo` runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_runs_the_loop_and_matches_the_truth(tmp_path: Path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "clickloop.cli",
            "--json",
            "demo",
            "--dir",
            str(tmp_path / "d"),
            "--events",
            "20000",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    steps = {s["step"]: s for s in result["steps"]}
    assert steps["simulate traffic"]["records"] == 20000
    assert steps["validate against the event contract"]["matches_truth"] is True
    assert (tmp_path / "d" / "clickloop.yaml").exists()
