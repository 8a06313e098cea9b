"""Ingestion through the CLI, as a user drives it: batch import, the stream ingester with its
metrics endpoint, lake stats and compaction — with the accounting reconciled at each step."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from clickloop.bus.base import open_bus
from clickloop.cli.app import main
from clickloop.project import Project
from tests.integration.ingest_helpers import publish_lines, sim_lines, truth, wait_for

pytestmark = pytest.mark.e2e


def _run(capsys, *args: str) -> dict:
    code = main(["--json", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


@pytest.fixture
def project(tmp_path: Path, capsys) -> Path:
    root = tmp_path / "shop"
    assert main(["init", str(root)]) == 0
    capsys.readouterr()
    return root


def test_batch_import_stats_and_compaction_reconcile(project: Path, sim_small: Path, capsys):
    summary = truth(sim_small)
    expected = summary["expected"]
    report = _run(capsys, "-p", str(project), "ingest", "batch", str(sim_small / "events"))
    assert report["received"] == summary["records"] and report["balanced"]
    assert report["accepted"] == expected["valid"]
    assert report["quarantined"] == expected["quarantined"]

    again = _run(capsys, "-p", str(project), "ingest", "batch", str(sim_small / "events"))
    assert again["received"] == 0
    assert all(f["status"].startswith("skipped") for f in again["files"])

    stats = _run(capsys, "-p", str(project), "lake", "stats")
    assert stats["events"]["rows"] == expected["valid"]
    assert stats["events"]["partitions"] == 4  # 3 days, plus late events of the 4th
    assert stats["events"]["newest_event"] and stats["events"]["newest_arrival"]
    assert stats["sources"]["files"]["duplicates"] == expected["duplicates"]
    assert stats["quarantine"]["rows"] == sum(expected["quarantined"].values())

    compacted = _run(capsys, "-p", str(project), "lake", "compact", "--retain", "0s")
    assert compacted["vacuum"]["orphans"] == 0
    after = _run(capsys, "-p", str(project), "lake", "stats")
    assert after["events"]["rows"] == stats["events"]["rows"]
    assert after["sources"] == stats["sources"]


def test_lake_stats_in_words(project: Path, sim_small: Path, capsys):
    assert main(["-p", str(project), "--quiet", "ingest", "batch", str(sim_small / "events")]) == 0
    capsys.readouterr()
    assert main(["-p", str(project), "lake", "stats", "--partitions"]) == 0
    out = capsys.readouterr().out
    assert "received =" in out and "dt=2026-11-01" in out and "quarantined" in out


def test_a_missing_path_is_a_clear_error(project: Path, capsys):
    assert main(["-p", str(project), "ingest", "batch", str(project / "nope.jsonl")]) == 1
    assert "no such file" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_stream_ingester_serves_metrics_and_stops_cleanly_on_sigterm(
    project: Path, sim_small: Path
):
    bus = open_bus(Project.load(project))
    publish_lines(bus, sim_lines(sim_small))
    bus.close()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "clickloop.cli", "-p", str(project), "--json", "ingest",
         "stream", "--metrics-port", str(port), "--max-wait", "200ms"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    summary = truth(sim_small)
    url = f"http://127.0.0.1:{port}/metrics"

    def scraped() -> str:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            return ""

    def all_in() -> bool:
        text = scraped()
        want = (
            f'clickloop_ingest_records_received_total{{source="bus:events"}} {summary["records"]}'
        )
        return want + ".0" in text

    try:
        wait_for(all_in, 120, "the metrics to count every record")
        text = scraped()
        assert "clickloop_lake_commit_seconds_bucket" in text
        assert 'clickloop_lake_bytes_written_total{kind="events"}' in text
        assert (
            'clickloop_ingest_records_quarantined_total{reason="bad_ts",source="bus:events"}'
            in text
        )
        assert "clickloop_ingest_bus_lag" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    report = json.loads(out)
    assert report["received"] == summary["records"] and report["balanced"]
    assert report["accepted"] == summary["expected"]["valid"]
