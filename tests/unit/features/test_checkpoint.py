"""The stream checkpoint: what is saved is what is loaded, written incrementally."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from clickloop.features.checkpoint import Checkpoint
from clickloop.features.stream import FeatureStream
from tests.unit.features.test_parity import FS, to_table

DAY_TICKS = 86_400 * 2  # ticks of half a second


def events(n: int, start: int, *, day: int = 0) -> list[dict]:
    return [{"user_id": "abc"[i % 3], "k": day * DAY_TICKS + i % 400, "jitter": 0,
             "type": "view", "kind": "x", "price": "1", "id": f"d{day}-{start + i}"}
            for i in range(n)]  # fmt: skip


def test_dedupe_memory_survives_many_checkpoints_in_few_runs(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cp = Checkpoint(path)
    stream = FeatureStream([FS])
    sent = 0
    for _ in range(40):  # 40 checkpoints of one growing day
        stream.apply(to_table(events(50, sent)))
        sent += 50
        cp.save(stream, {("events", 0): sent})
    runs = cp.con.execute("SELECT count(*), sum(n) FROM dedupe_runs").fetchone()
    assert runs[1] == sent and runs[0] <= 8  # O(log n) runs, each hash once
    cp.close()
    again = FeatureStream([FS])
    offsets = Checkpoint(path).load(again)
    assert offsets == {("events", 0): sent}
    assert again.dedupe.buckets == stream.dedupe.buckets
    assert again.values("s", "a") == stream.values("s", "a")
    before = again.values("s", "b")["s__count"]
    again.apply(to_table(events(60, sent - 10)))  # 10 repeats, 50 new
    assert again.stats.duplicates == 10
    assert again.values("s", "b")["s__count"] == before + 50 // 3 + (1 if 50 % 3 > 1 else 0)


def test_forgotten_days_leave_the_file(tmp_path: Path) -> None:
    cp = Checkpoint(tmp_path / "c.sqlite")
    stream = FeatureStream([FS])
    stream.apply(to_table(events(10, 0, day=0)))
    cp.save(stream, {})
    stream.apply(to_table(events(10, 0, day=20)))  # 20 days on: day 0 is past the horizon
    cp.save(stream, {})
    days = {d for (d,) in cp.con.execute("SELECT DISTINCT day FROM dedupe_runs")}
    assert days == set(stream.dedupe.buckets) and len(days) == 1


def test_a_format_2_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cp = Checkpoint(path)
    stream = FeatureStream([FS])
    stream.apply(to_table(events(30, 0)))
    cp.save(stream, {("events", 0): 30})
    cp.close()
    con = sqlite3.connect(path)  # rewrite it the way format 2 stored hashes: a blob per day
    for day, ids in con.execute("SELECT day, ids FROM dedupe_runs").fetchall():
        con.execute("INSERT INTO dedupe VALUES (?, ?)", (day, ids))
    con.execute("DELETE FROM dedupe_runs")
    con.execute("UPDATE meta SET v = '2' WHERE k = 'format'")
    con.commit()
    con.close()
    again = FeatureStream([FS])
    Checkpoint(path).load(again)
    assert again.dedupe.buckets == stream.dedupe.buckets
    assert sum(len(b) for b in again.dedupe.buckets.values()) == 30
    assert np.all([len(b) for b in again.dedupe.buckets.values()])
