"""The SQLite online store across real processes: kill -9 mid-write, concurrent writers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clickloop.stores.base import CHUNK_ROWS
from clickloop.stores.sqlite import SqliteOnlineStore

pytestmark = pytest.mark.slow

WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta
    import pyarrow as pa
    from clickloop.stores.sqlite import SqliteOnlineStore

    path, n, version, offset = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    ts = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=version)
    store = SqliteOnlineStore(path)
    for rnd in range(int(sys.argv[5])):
        ids = [f"u{i:07d}" for i in range(offset, offset + n)]
        table = pa.table({
            "entity": ids,
            "_event_ts": pa.array([ts + timedelta(seconds=rnd)] * n, pa.timestamp("us", "UTC")),
            "i": pa.array(range(offset, offset + n), pa.int64()),
            "v": pa.array([version * 1000 + rnd] * n, pa.int64()),
            "tag": [f"{version}-{rnd}"] * n,
        })
        store.write("fs", table)
    store.close()
    """
)


def spawn(path: Path, n: int, version: int, offset: int = 0, rounds: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(n), str(version), str(offset), str(rounds)],
        start_new_session=True,
    )


def test_kill_9_mid_materialisation_keeps_whole_chunks_and_a_rerun_completes(tmp_path: Path):
    path = tmp_path / "online.sqlite"
    total = CHUNK_ROWS * 6
    SqliteOnlineStore(path).close()
    proc = spawn(path, total, version=1)
    store = SqliteOnlineStore(path)
    deadline = time.monotonic() + 120
    while store.count("fs") < CHUNK_ROWS and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    landed = store.count("fs")
    assert 0 < landed < total, "the writer finished before it was killed: nothing was tested"
    assert landed % CHUNK_ROWS == 0  # each chunk is one transaction: all of it or none
    got = store.read_many([f"u{i:07d}" for i in range(0, total, 997)], ["fs"])
    for i, row in zip(range(0, total, 997), got, strict=True):
        assert row == ({"i": i, "v": 1000, "tag": "1-0"} if i < landed else {})
    rerun = spawn(path, total, version=1)
    assert rerun.wait(300) == 0
    assert store.count("fs") == total
    assert store.read(f"u{total - 1:07d}", ["fs"]) == {"i": total - 1, "v": 1000, "tag": "1-0"}
    store.close()


def test_concurrent_writer_processes_leave_the_latest_event_time_per_entity(tmp_path: Path):
    path = tmp_path / "online.sqlite"
    n = 20_000
    SqliteOnlineStore(path).close()
    # the "stream" writes newer versions (2) while a "backfill" replays older ones (1)
    procs = [spawn(path, n, version=1, rounds=3), spawn(path, n, version=2, rounds=3)]
    assert [p.wait(300) for p in procs] == [0, 0]
    with SqliteOnlineStore(path) as store:
        rows = store.read_many([f"u{i:07d}" for i in range(n)], ["fs"])
        assert {r["tag"] for r in rows} == {"2-2"}
        assert [r["i"] for r in rows] == list(range(n))
        info = store.info("fs")
        assert info is not None and info.rows_applied + info.rows_stale == 6 * n
        assert info.rows_applied >= 3 * n
