"""The stream checkpoint: what is saved is what is loaded, written incrementally."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from clickloop.errors import DataError
from clickloop.features.checkpoint import FORMAT, Checkpoint
from clickloop.features.stream import FeatureStream
from tests.unit.features.test_dedupe import memory
from tests.unit.features.test_parity import FS, to_table

FORMAT_3 = Path(__file__).parent / "data" / "stream-format3.sqlite"

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
    assert memory(again.dedupe) == memory(stream.dedupe)
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
    assert days == set(stream.dedupe.days()) and len(days) == 1


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
    assert memory(again.dedupe) == memory(stream.dedupe)
    assert len(again.dedupe) == 30


def format_3_history(cp: Checkpoint | None = None) -> FeatureStream:
    """What wrote ``data/stream-format3.sqlite`` (with the format-3 code): 3 days, 5
    batches of 40 events a day (10 of them repeats), a checkpoint after each batch."""
    stream = FeatureStream([FS])
    sent = 0
    for day in range(3):
        for b in range(5):
            stream.apply(to_table(events(40, b * 30, day=day)))
            sent += 40
            if cp is not None:
                cp.save(stream, {("events", 0): sent})
    return stream


def test_a_format_3_file_is_upgraded_in_place(tmp_path: Path) -> None:
    """A checkpoint written by the previous version (unsorted runs of hashes) loads with the
    same memory, state and offsets, is rewritten as sorted runs, and goes on working."""
    path = tmp_path / "c.sqlite"
    shutil.copy(FORMAT_3, path)
    con = sqlite3.connect(path)
    assert con.execute("SELECT v FROM meta WHERE k = 'format'").fetchone()[0] in ("3", b"3")
    con.close()
    expected = format_3_history()
    assert expected.stats.duplicates == 120
    again = FeatureStream([FS])
    cp = Checkpoint(path)
    assert cp.load(again) == {("events", 0): 600}
    assert memory(again.dedupe) == memory(expected.dedupe) and len(again.dedupe) == 480
    assert again.values("s", "a") == expected.values("s", "a")
    assert again.stats.duplicates == 120 and again.clock == expected.clock
    for day, n, blob in cp.con.execute("SELECT day, n, ids FROM dedupe_runs"):
        run = np.frombuffer(blob, "<u8")
        assert len(run) == n and np.all(run[1:] > run[:-1]), f"day {day} not sorted"
    assert cp._meta("format") == FORMAT == 4
    # the upgraded memory catches repeats of every day, and new ids checkpoint as before
    again.apply(to_table(events(20, 150, day=2)))  # d2-150 … 159 known, 160 … 169 new
    assert again.stats.duplicates == 130
    cp.save(again, {("events", 0): 620})
    cp.close()
    third = FeatureStream([FS])
    Checkpoint(path).load(third)
    assert memory(third.dedupe) == memory(again.dedupe) and len(third.dedupe) == 490


def test_a_constructed_format_3_file_with_repeated_hashes_is_upgraded(tmp_path: Path) -> None:
    """Format 3 could hold a hash in two runs of a day (ids remembered twice by a bootstrap):
    the upgrade keeps it once."""
    path = tmp_path / "c.sqlite"
    cp = Checkpoint(path)
    stream = format_3_history(cp)
    cp.close()
    con = sqlite3.connect(path)
    rng = np.random.default_rng(5)
    days = [d for (d,) in con.execute("SELECT DISTINCT day FROM dedupe_runs").fetchall()]
    for day in days:
        rows = con.execute("SELECT ids FROM dedupe_runs WHERE day = ?", (day,)).fetchall()
        h = np.concatenate([np.frombuffer(ids, "<u8") for (ids,) in rows])
        con.execute("DELETE FROM dedupe_runs WHERE day = ?", (day,))
        rng.shuffle(h)
        con.execute("INSERT INTO dedupe_runs VALUES (?, 0, ?, ?)", (day, len(h), h.tobytes()))
        con.execute("INSERT INTO dedupe_runs VALUES (?, 1, 5, ?)", (day, h[:5].tobytes()))
    con.execute("UPDATE meta SET v = '3' WHERE k = 'format'")
    con.commit()
    con.close()
    again = FeatureStream([FS])
    Checkpoint(path).load(again)
    assert memory(again.dedupe) == memory(stream.dedupe) and len(again.dedupe) == 480


def test_a_damaged_dedupe_run_is_reported_not_used(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cp = Checkpoint(path)
    format_3_history(cp)
    cp.con.execute("UPDATE dedupe_runs SET ids = substr(ids, 1, 20) WHERE run = 0")
    cp.close()
    with pytest.raises(DataError, match=r"dedupe run of day \d+ is 20 bytes.*damaged"):
        Checkpoint(path).load(FeatureStream([FS]))
    cp = Checkpoint(path)
    day = cp.con.execute("SELECT day FROM dedupe_runs WHERE run = 0").fetchone()[0]
    h = np.arange(10, 0, -1, dtype="<u8")  # right size, wrong order
    cp.con.execute("UPDATE dedupe_runs SET ids = ?, n = 10 WHERE day = ? AND run = 0",
                   (h.tobytes(), day))  # fmt: skip
    cp.close()
    with pytest.raises(DataError, match="not sorted"):
        Checkpoint(path).load(FeatureStream([FS]))
