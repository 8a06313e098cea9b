"""Bootstrap of the feature stream from the lake, on the real local bus, lake and SQLite store.

The events are split as in production: the first part imported in batch (lake only),
the rest published on the bus, with an overlap present in both (the stream ingester
writes bus events to the lake). The oracle is the batch engine over a lake holding
every event once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from clickloop.features.runner import StreamRunner
from clickloop.lake import Lake
from clickloop.project import Project
from clickloop.stores.base import open_online_store
from tests.integration.test_features_stream import lenient, online_matches_batch
from tests.unit.features.conftest import FEATURES, make_project, read_events, sim_lake  # noqa: F401

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SETS = ["user_activity", "user_clicks", "user_impressions"]  # keyed by user (the oracle)


def split(sim: Path, root: Path) -> tuple[Path, pa.Table]:
    """A lake with the first 60% of arrivals; the bus part: the last 50% (10% in both)."""
    events = read_events(sim).sort_by("received_at")
    n = events.num_rows
    lake_dir = root / "lake"
    lake = Lake.open(str(lake_dir))
    lake.append_events(events.slice(0, int(n * 0.6)), source="import")
    lake.close()
    return lake_dir, events.slice(int(n * 0.5))


def publish(project: Project, events: pa.Table) -> int:
    from clickloop.bus.base import open_bus
    from clickloop.ingest.collector_records import to_messages

    bus = open_bus(project)
    producer = bus.producer()
    msgs = to_messages(events)
    for start in range(0, len(msgs), 5000):
        producer.publish("events", msgs[start : start + 5000])
    producer.close()
    bus.close()
    return len(msgs)


@pytest.fixture
def split_project(tmp_path: Path, sim_small: Path) -> tuple[Project, int]:
    lake_dir, bus_part = split(sim_small, tmp_path)
    project = make_project(tmp_path / "p", lake_dir, sim_small, features=lenient(FEATURES))
    return project, publish(project, bus_part)


def oracle(tmp_path: Path, sim_lake: Path, sim_small: Path) -> Project:  # noqa: F811
    return make_project(tmp_path / "oracle", sim_lake, sim_small, features=lenient(FEATURES))


def lake_rows(project: Project) -> int:
    from clickloop.lake import open_lake

    lake = open_lake(project)
    try:
        return sum(e.rows for e in lake.refresh().files.values() if e.kind == "events")
    finally:
        lake.close()


def test_lake_plus_bus_equals_batch_over_everything(
    tmp_path: Path, split_project: tuple[Project, int], sim_lake: Path, sim_small: Path,  # noqa: F811
) -> None:  # fmt: skip
    project, sent = split_project
    runner = StreamRunner(project, checkpoint_every=0.5, batch_size=3000)
    assert runner.needs_bootstrap  # auto, and no checkpoint yet
    report = runner.run(until_idle=1.0)
    runner.close()
    boot = report["bootstrap"]
    assert boot["events"] == lake_rows(project)
    assert boot["rows_written"] > 0 and boot["end"] < report["clock"]
    assert report["messages"] == sent
    # the overlap (10% of the arrivals) was in the lake already: counted once
    assert report["duplicates"] >= 0.09 * len(read_events(sim_small))
    assert report["before_bootstrap"] == 0
    assert all(s["too_late"] == 0 for s in report["sets"].values())
    checked = online_matches_batch(project, runner, SETS,
                                   oracle=oracle(tmp_path, sim_lake, sim_small))  # fmt: skip
    assert checked > 1000
    # restarted: resumes from the checkpoint, no second bootstrap
    again = StreamRunner(project, checkpoint_every=0.5)
    assert not again.needs_bootstrap
    assert again.run(until_idle=0.5)["bootstrap"] is None
    again.close()


def test_without_bootstrap_the_bus_alone_is_not_enough(
    tmp_path: Path, split_project: tuple[Project, int], sim_lake: Path, sim_small: Path,  # noqa: F811
) -> None:  # fmt: skip
    """The product gap the bootstrap closes: the lake-only history is missing."""
    project, _ = split_project
    runner = StreamRunner(project, bootstrap="none", checkpoint_every=0.5, batch_size=3000)
    report = runner.run(until_idle=1.0)
    runner.close()
    assert report["bootstrap"] is None
    with pytest.raises(AssertionError):
        online_matches_batch(project, runner, SETS, oracle=oracle(tmp_path, sim_lake, sim_small))


CHILD = """
import os, signal, sys
sys.path.insert(0, {root!r})
from clickloop.features.runner import StreamRunner
from clickloop.project import Project
runner = StreamRunner(Project.load(sys.argv[1]))
where = sys.argv[2]
calls = [0]
def die(*_a, **_k):
    os.kill(os.getpid(), signal.SIGKILL)
def progress(n):
    calls[0] += 1
    if where == "reading" and calls[0] == 1:
        die()
if where == "saving":
    runner.checkpoint.save = die
import clickloop.features.bootstrap as b
b.BATCH_ROWS = 4000  # several steps, so that the kill lands mid-read
runner.bootstrap(progress=progress)
"""


@pytest.mark.parametrize("where", ["reading", "saving"])
def test_kill_during_bootstrap_then_restart(
    tmp_path: Path, split_project: tuple[Project, int], sim_lake: Path, sim_small: Path,  # noqa: F811
    where: str,
) -> None:  # fmt: skip
    """kill -9 while reading the lake, or after the online writes but before the checkpoint:
    the restart bootstraps again from scratch — same values, nothing counted twice."""
    project, sent = split_project
    code = CHILD.format(root=str(ROOT))
    argv = [sys.executable, "-c", code, str(project.root), where]
    proc = subprocess.run(argv, check=False, capture_output=True, timeout=300, env={**os.environ})
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    runner = StreamRunner(project, checkpoint_every=0.5, batch_size=3000)
    assert runner.needs_bootstrap  # the killed run left no checkpoint
    report = runner.run(until_idle=1.0)
    runner.close()
    assert report["bootstrapped"] == lake_rows(project)  # once, not twice
    assert report["messages"] == sent
    online_matches_batch(project, runner, SETS, oracle=oracle(tmp_path, sim_lake, sim_small))
    with open_online_store(project) as store:
        assert store.info("user_activity") is not None


def test_cli_reports_the_bootstrap(split_project: tuple[Project, int]) -> None:
    import json

    project, sent = split_project
    base = [sys.executable, "-m", "clickloop.cli", "-p", str(project.root)]
    proc = subprocess.run([*base, "--json", "features", "stream", "--until-idle", "1"],
                          check=False, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["bootstrap"]["events"] == lake_rows(project)
    assert report["messages"] == sent
    # a rebuild on request, in human form
    argv = [*base, "features", "stream", "--bootstrap", "lake", "--until-idle", "0.5"]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "bootstrap from the lake" in proc.stdout
    bad = subprocess.run([*base, "features", "stream", "--bootstrap", "bus"],
                         check=False, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "bus" in bad.stderr + bad.stdout
