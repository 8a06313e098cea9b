"""kill -9 the ingesters (real subprocesses) at the worst moments: every record still ends
up in exactly one place — the lake, quarantine, or dropped as a duplicate — exactly once."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from clickloop.bus.base import open_bus
from clickloop.lake import Lake, open_lake
from clickloop.project import Project
from tests.integration.ingest_helpers import clickloop, publish_lines, sim_lines, truth, wait_for

pytestmark = pytest.mark.integration


def _project(root: Path) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    (root / "clickloop.yaml").write_text(
        "project: crash\n"
        "bus: {type: local, partitions: 4, session_timeout: 2s}\n"
        "ingest: {batch_max_events: 700, batch_max_wait: 300ms}\n"
    )
    return Project.load(root)


def _assert_exactly_once(lake: Lake, summary: dict, source: str) -> None:
    expected = summary["expected"]
    stats = lake.stats()
    counts = stats["sources"][source]
    assert counts["received"] == summary["records"]
    assert counts["accepted"] == expected["valid"]
    assert counts["duplicates"] == expected["duplicates"]
    assert counts["quarantined"] == expected["quarantined"]
    ids = lake.events(columns=["event_id"]).to_table().column("event_id").to_pylist()
    assert len(ids) == expected["valid"], "events lost or duplicated"
    assert not [i for i, n in Counter(ids).items() if n > 1], "an event_id is in the lake twice"
    reasons = Counter(lake.quarantine(columns=["reason"]).to_table().column("reason").to_pylist())
    assert dict(reasons) == expected["quarantined"]


def _killed(proc: subprocess.Popen, timeout: float = 120) -> None:
    proc.wait(timeout)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err.decode()[-2000:])


def test_stream_ingester_killed_mid_batch_then_restarted_keeps_every_event_once(
    tmp_path: Path, sim_small: Path
):
    project = _project(tmp_path / "proj")
    bus = open_bus(project)
    publish_lines(bus, sim_lines(sim_small))
    bus.close()
    lake = open_lake(project)
    args = ("ingest", "stream", "--idle-exit", "4")

    # 1. die after staging the third batch's files, before its lake commit
    _killed(clickloop(project.root, *args, crash="stream-staged:3"))
    assert lake.stats()["version"] == 2
    # 2. die after the lake commit of a batch, before acknowledging it on the bus
    _killed(clickloop(project.root, *args, crash="stream-lake-committed:2"))
    # 3. kill -9 from outside at an arbitrary moment of a running ingester
    proc = clickloop(project.root, *args)
    before = lake.stats()["version"]
    wait_for(lambda: lake.stats()["version"] >= before + 3, 60, "the ingester to commit")
    proc.send_signal(signal.SIGKILL)
    _killed(proc)
    # 4. run to the end
    done = clickloop(project.root, *args, json=True)
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err.decode()[-2000:]

    _assert_exactly_once(lake, truth(sim_small), "bus:events")
    bus = open_bus(project)
    assert sum(bus.lag("clickloop-lake", "events").values()) == 0
    bus.close()
    # what the killed processes staged but never committed is gone
    names = [
        f["name"] for top in ("raw", "quarantine", "_index") for f in lake.storage.walk_files(top)
    ]
    live = {e.path for e in lake.refresh().files.values()} | {
        e.ids for e in lake.refresh().files.values() if e.ids
    }
    assert set(names) == live


def test_batch_import_killed_half_way_then_rerun_imports_exactly_once(tmp_path: Path):
    from clickloop.simulate import simulate

    sim = tmp_path / "sim"  # big enough for many 16 MiB blocks and commits
    simulate(sim, events=400_000, days=3, seed=5, malformed=0.01)
    project = _project(tmp_path / "proj")
    lake = open_lake(project)
    args = ("ingest", "batch", str(sim / "events"), "--commit-every", "40000")

    _killed(clickloop(project.root, *args, crash="batch-staged:3"))
    assert lake.stats()["version"] == 2
    _killed(clickloop(project.root, *args, crash="batch-committed:2"))
    proc = clickloop(project.root, *args, "--workers", "1")
    before = lake.stats()["version"]
    wait_for(lambda: lake.stats()["version"] > before, 60, "the import to commit")
    proc.send_signal(signal.SIGKILL)
    _killed(proc)
    partial = lake.stats()["total"]["received"]
    assert 0 < partial < truth(sim)["records"]

    done = clickloop(project.root, *args, json=True)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err.decode()[-2000:]
    _assert_exactly_once(lake, truth(sim), "files")

    again = clickloop(project.root, *args, json=True)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0 and b'"received": 0' in out
    _assert_exactly_once(lake, truth(sim), "files")
