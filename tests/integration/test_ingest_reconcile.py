"""Reconciliation on simulator data: lake rows + quarantine + duplicates == records in, and
the quarantine reasons are exactly the ones the simulator's ground truth expects."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from clickloop.bus.base import open_bus
from clickloop.ingest.batch import import_files
from clickloop.ingest.stream import run_stream
from clickloop.lake import open_lake
from clickloop.project import Project
from tests.integration.ingest_helpers import publish_lines, sim_lines, truth

pytestmark = pytest.mark.integration


def _project(root: Path) -> Project:
    root.mkdir(parents=True)
    (root / "clickloop.yaml").write_text(
        "project: rec\nbus: {type: local, partitions: 3, session_timeout: 2s}\n"
        "ingest: {batch_max_events: 5000, batch_max_wait: 200ms}\n"
    )
    return Project.load(root)


def _reconcile(project: Project, source: str, summary: dict) -> None:
    lake = open_lake(project)
    expected = summary["expected"]
    counts = lake.stats()["sources"][source]
    rows = lake.events().count_rows()
    quarantined = lake.quarantine().count_rows()
    assert rows + quarantined + counts["duplicates"] == summary["records"]
    assert rows == expected["valid"] and counts["accepted"] == rows
    assert counts["duplicates"] == expected["duplicates"]
    reasons = Counter(lake.quarantine(columns=["reason"]).to_table().column("reason").to_pylist())
    assert dict(reasons) == expected["quarantined"] == counts["quarantined"]


def test_batch_import_reconciles_with_the_simulator(tmp_path, sim_small):
    project = _project(tmp_path / "p")
    report = import_files(project, [str(sim_small / "events")], commit_every=7000)
    assert report.commits >= 4
    _reconcile(project, "files", truth(sim_small))


def test_stream_ingest_reconciles_with_the_simulator(tmp_path, sim_small):
    project = _project(tmp_path / "p")
    bus = open_bus(project)
    publish_lines(bus, sim_lines(sim_small))
    bus.close()
    report = run_stream(project, idle_exit=2.0)
    assert report.batches >= 6
    _reconcile(project, "bus:events", truth(sim_small))


def test_events_accepted_by_batch_are_duplicates_when_they_come_again_by_stream(
    tmp_path, sim_small
):
    project = _project(tmp_path / "p")
    summary = truth(sim_small)
    import_files(project, [str(sim_small / "events")])
    bus = open_bus(project)
    publish_lines(bus, sim_lines(sim_small))
    bus.close()
    stop = threading.Event()
    report = run_stream(project, stop=stop, idle_exit=2.0)
    expected = summary["expected"]
    assert report.counts.accepted == 0
    assert report.counts.duplicates == expected["valid"] + expected["duplicates"]
    assert report.counts.quarantined == expected["quarantined"]
    lake = open_lake(project)
    assert lake.events().count_rows() == expected["valid"]
    assert lake.stats()["total"]["balanced"]
