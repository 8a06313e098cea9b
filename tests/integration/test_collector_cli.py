"""`clickloop ingest serve` as an operator runs it, and the collector on a Kafka bus."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from clickloop.bus.base import open_bus
from clickloop.cli.app import main
from clickloop.ingest.collector import BackgroundCollector
from clickloop.project import Project
from tests.integration.test_collector import AUTH, TOKEN, Drain, event, make_project

pytestmark = pytest.mark.integration


class JsonLines:
    """Reads the (indented) JSON objects a `--json` command prints, with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.buffer = ""

    def next(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            start = self.buffer.find("{")
            if start >= 0:
                decoder = json.JSONDecoder()
                try:
                    obj, end = decoder.raw_decode(self.buffer[start:])
                except ValueError:
                    pass
                else:
                    self.buffer = self.buffer[start + end :]
                    return obj
            left = deadline - time.monotonic()
            assert left > 0, f"no JSON object within {timeout}s; got {self.buffer!r}"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536).decode()
                assert chunk, f"the process ended: {self.buffer!r}"
                self.buffer += chunk


def test_serve_answers_until_sigterm_then_reports_its_totals(tmp_path: Path):
    project = make_project(tmp_path / "p")
    cli = [sys.executable, "-m", "clickloop.cli", "--json", "-p", str(project.root)]
    proc = subprocess.Popen(
        [*cli, "ingest", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "T_TOKEN": TOKEN},
    )
    try:
        out = JsonLines(proc)
        listening = out.next()
        assert listening["event"] == "listening" and listening["source"] == "web"
        assert listening["auth"] == "1 token(s)" and listening["bus"] == "local"
        url = listening["url"]
        r = httpx.post(f"{url}/v1/events", json=[event(1), event(2), {"x": 1}], headers=AUTH)
        assert r.status_code == 400 and r.json()["details"]["accepted"] == 2
        proc.send_signal(signal.SIGTERM)
        stopped = out.next()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    assert stopped == {
        "event": "stopped",
        "source": "web",
        "received": 3,
        "accepted": 2,
        "rejected": 1,
    }
    bus = open_bus(project)
    drain = Drain(bus)
    assert sorted(m["event_id"] for m in drain.new()) == ["e1", "e2"]
    drain.close()
    bus.close()


def test_serve_warns_loudly_when_authentication_is_off(tmp_path: Path):
    (tmp_path / "clickloop.yaml").write_text("sources:\n  web: {type: collector, port: 0}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "clickloop.cli", "-p", str(tmp_path), "ingest", "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        seen = ""
        assert proc.stdout is not None
        while "listening on" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        assert "authentication disabled" in seen
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "authentication is DISABLED" in err


def test_serve_usage_errors_exit_2_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "clickloop.yaml").write_text("sources:\n  logs: {type: files, path: x.csv}\n")
    assert main(["-p", str(tmp_path), "ingest", "serve"]) == 2
    assert "no collector source" in capsys.readouterr().err
    assert main(["-p", str(tmp_path), "ingest", "serve", "--source", "logs"]) == 2
    assert "not a collector" in capsys.readouterr().err
    (tmp_path / "clickloop.yaml").write_text("sources:\n  web: {type: collector}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["-p", str(tmp_path), "ingest", "serve", "--port", str(port)]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_events_reach_kafka_once_acknowledged(tmp_path: Path, kafka_server: Any):
    pytest.importorskip("clickloop.bus.kafka", reason="the Kafka bus is not in this tree yet")
    project = make_project(
        tmp_path / "p",
        bus=f"{{type: kafka, bootstrap: '{kafka_server.bootstrap}', partitions: 2, "
        f"topic_prefix: 'collector-{time.time_ns()}-', "
        "client: {'session.timeout.ms': 6000}}",
    )
    with BackgroundCollector(project) as c:
        r = httpx.post(f"{c.url}/v1/events", json=[event(1), event(2)], headers=AUTH, timeout=60)
        assert r.status_code == 202
        assert httpx.get(f"{c.url}/readyz", timeout=30).status_code == 200
    bus = open_bus(Project.load(project.root, env={"T_TOKEN": TOKEN}))
    try:
        drain = Drain(bus, "kafka-check")
        assert sorted(m["event_id"] for m in drain.new(timeout=60, expect=2)) == ["e1", "e2"]
        drain.close()
    finally:
        bus.close()
