"""Helpers shared by the ingestion integration tests (publishing simulator data, waiting)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from clickloop.bus.base import Bus


def sim_lines(sim_dir: Path) -> list[bytes]:
    out: list[bytes] = []
    for f in sorted((sim_dir / "events").glob("*.jsonl")):
        out += [line for line in f.read_bytes().split(b"\n") if line]
    return out


def truth(sim_dir: Path) -> dict[str, Any]:
    return json.loads((sim_dir / "truth" / "summary.json").read_text())


def publish_lines(bus: Bus, lines: list[bytes], chunk: int = 5000) -> None:
    """Publish JSONL lines as ``events`` messages keyed by user (as the collector does)."""
    producer = bus.producer()
    for i in range(0, len(lines), chunk):
        records = []
        for line in lines[i : i + chunk]:
            try:
                user = orjson.loads(line).get("user_id")
            except orjson.JSONDecodeError:
                user = None
            records.append((user.encode() if isinstance(user, str) else None, line))
        producer.publish("events", records)
    producer.close()


def clickloop(
    project: Path, *args: str, crash: str | None = None, json: bool = False, **kw: Any
) -> subprocess.Popen:
    """Start ``clickloop -p PROJECT [--json] ARGS…`` as a real subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLICKLOOP_", "CLTEST_"))}
    if crash:
        env["CLTEST_CRASH_AT"] = crash
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clickloop.cli",
            "-p",
            str(project),
            "--quiet",
            *(["--json"] if json else []),
            *args,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
