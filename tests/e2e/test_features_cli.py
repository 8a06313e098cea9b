"""`clickloop features …` end to end: stream killed with SIGKILL and restarted, backfill,
materialize and get — checked against the batch engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clickloop.bus.base import open_bus
from tests.integration.test_features_stream import lenient, online_matches_batch, publish
from tests.unit.features.conftest import FEATURES, make_project, sim_lake  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def cli(project: Path, *args: str, timeout: float = 300) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "clickloop.cli", "-p", str(project), "--json", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def test_stream_survives_kill_9_without_double_counting(tmp_path: Path, sim_lake: Path,  # noqa: F811
                                                        sim_small: Path) -> None:  # fmt: skip
    # a short session timeout: the killed member's partitions move on quickly
    project = make_project(
        tmp_path / "p",
        sim_lake,
        sim_small,
        features=lenient(FEATURES),
        bus={"type": "local", "session_timeout": "2s"},
    )
    total = publish(project, sim_small)
    errors = tmp_path / "stream.err"
    with errors.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clickloop.cli", "-p", str(project.root), "--json",
             "features", "stream", "--checkpoint-every", "0.2", "--batch-size", "500"],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    bus = open_bus(project)
    try:
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline:
            done = sum(bus.committed_offsets("features", "events").values())
            if done > 0:
                break
            assert proc.poll() is None, errors.read_text()
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # no chance to save anything more
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 0 < done < total, "the kill should land mid-stream"
    # restart: resumes from the checkpoint, finishes the topic, stops when idle
    report = cli(project.root, "features", "stream", "--until-idle", "1.5")
    assert sum(bus.lag("features", "events").values()) == 0
    bus.close()
    assert report["messages"] <= total - done + 500 * 4  # resumed near the checkpoint
    from clickloop.features.runner import StreamRunner

    # a runner on the same state reads the clock and entities the restarted process left
    runner = StreamRunner(project, checkpoint_every=3600)
    try:
        checked = online_matches_batch(project, runner, ["user_activity", "user_clicks",
                                                         "user_impressions"])  # fmt: skip
        assert checked > 1000
    finally:
        runner.close()


def test_backfill_materialize_get(tmp_path: Path, sim_lake: Path, sim_small: Path) -> None:  # noqa: F811
    project = make_project(tmp_path / "p", sim_lake, sim_small)
    out = cli(project.root, "features", "backfill", "user_clicks", "user_activity",
              "--start", "2026-11-01", "--end", "2026-11-04", "--every", "1d")  # fmt: skip
    results = {r["feature_set"]: r for r in out["results"]}
    assert len(results["user_clicks"]["snapshots"]) == 3
    assert results["user_activity"]["rows"] > 0
    listed = cli(project.root, "features", "list")
    assert {s["feature_set"]: s["snapshots"] for s in listed["feature_sets"]}["user_clicks"] == 3
    mat = cli(project.root, "features", "materialize", "user_clicks", "user_activity",
              "--as-of", "2026-11-03T12:00:00Z")  # fmt: skip
    assert [r["as_of"] for r in mat["results"]] == ["2026-11-03T00:00:00+00:00"] * 2
    # pick a user with clicks: the online value equals the computed one at the snapshot time
    import duckdb

    from clickloop.features import load_sets, offline

    fs = load_sets(project, ["user_clicks"])[0]
    user, count = duckdb.sql(
        f"SELECT entity, user_clicks__count_1d FROM read_parquet('{offline.glob(project, fs)}') "
        "WHERE _as_of = TIMESTAMPTZ '2026-11-03 00:00:00+00' ORDER BY 2 DESC LIMIT 1"
    ).fetchall()[0]
    assert count > 0
    online = cli(project.root, "features", "get", user, "--set", "user_clicks")
    assert online["features"]["user_clicks__count_1d"] == count
    computed = cli(project.root, "features", "get", user, "--set", "user_clicks",
                   "--as-of", "2026-11-03T00:00:00Z")  # fmt: skip
    assert computed["features"]["user_clicks__count_1d"] == count
    assert datetime.fromisoformat(mat["results"][0]["as_of"]) < datetime.now(UTC)
