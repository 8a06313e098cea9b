"""Compaction, vacuum and crash recovery: the lake stays tidy without changing what it holds."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pyarrow as pa

from clickloop.lake import Lake, rejects_table
from clickloop.lake.maintenance import rebuild_index
from tests.unit.lake.helpers import T0, make_events


def _content(lake: Lake) -> list[dict]:
    return lake.events().to_table().sort_by("event_id").to_pylist()


def _fill(lake: Lake, batches: int = 12) -> None:
    for b in range(batches):  # many small commits, two days each
        lake.append_events(
            make_events(40, start=T0 + timedelta(minutes=b), step=timedelta(hours=1),
                        prefix=f"b{b}-"),
            source="s",
        )  # fmt: skip
        with lake.writer() as w, w.begin("s") as txn:
            txn.add_rejects(rejects_table([b"x"], ["unparseable"], ["d"], "s", T0))
            txn.commit()


def test_compaction_merges_small_files_without_changing_content(lake: Lake):
    _fill(lake)
    before, stats_before = _content(lake), lake.stats()
    files_before = len(lake.files())
    result = lake.compact(target_rows=1000)
    assert result["merged_files"] == files_before + 12 and result["written_files"] == 3
    assert len(lake.files()) == 2 and len(lake.files("quarantine")) == 1
    assert _content(lake) == before
    after = lake.stats()
    assert after["events"]["rows"] == stats_before["events"]["rows"]
    assert after["sources"] == stats_before["sources"]
    assert lake.quarantine().count_rows() == 12
    # the dedupe index still knows every id after compaction
    again = lake.append_events(make_events(40, step=timedelta(hours=1), prefix="b0-"), source="s")
    assert again.counts["s"].duplicates == 40


def test_large_files_are_left_alone(lake: Lake):
    lake.append_events(make_events(3000, step=timedelta(seconds=1)))
    lake.append_events(make_events(10, prefix="x", step=timedelta(seconds=1)))
    assert lake.compact(target_rows=4000)["merged_files"] == 0  # 3000 >= 4000 / 2


def test_vacuum_deletes_replaced_files_only_after_the_retention(lake: Lake):
    _fill(lake, 4)
    old = {e.path for e in lake.files()}
    lake.compact(target_rows=1000)
    kept = lake.vacuum(older_than=timedelta(hours=1))
    assert kept["expired_files"] == 0
    assert all(lake.storage.exists(p) for p in old)  # a reader may still be scanning them
    gone = lake.vacuum(older_than=timedelta(0))
    assert gone["expired_files"] == len(old) + 4
    assert not any(lake.storage.exists(p) for p in old)
    assert lake.refresh().removed == {}
    assert lake.events().count_rows() == 160


def test_vacuum_prunes_the_log_behind_checkpoints(lake: Lake):
    for i in range(230):
        lake.append_events(make_events(1, prefix=f"c{i}-"))
    lake.vacuum()
    names = [e["name"] for e in lake.storage.listdir("_log")]
    assert not any(n.endswith("00000000000000000050.json") for n in names)
    fresh = Lake.open(lake.url if not lake.storage.local else lake.storage.root)
    assert fresh.events().count_rows() == 230


def test_a_rebuilt_index_still_finds_duplicates(lake: Lake):
    lake.append_events(make_events(20))
    for e in lake.files():
        lake.storage.put_atomic(e.ids, b"garbage")
    assert rebuild_index(lake) == 1
    fresh = Lake.open(lake.url if not lake.storage.local else lake.storage.root)
    assert fresh.append_events(make_events(20)).counts["append"].duplicates == 20


def test_files_of_a_writer_killed_before_committing_are_removed_by_the_next(tmp_path: Path):
    root = tmp_path / "lake"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})
        from clickloop.lake import Lake
        from tests.unit.lake.helpers import make_events
        lake = Lake.open({str(root)!r})
        lake.append_events(make_events(5, prefix="ok"))
        w = lake.writer()
        txn = w.begin("s")
        txn.add_events(make_events(5000, prefix="lost"))
        txn._close_files()                      # staged and closed, never committed
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    lake = Lake.open(str(root))
    assert lake.events().count_rows() == 5
    staged = [f for top in ("raw", "_index") for f in lake.storage.walk_files(top)]
    assert len(staged) == 10  # committed data + sidecar, and the dead writer's 4 days of pairs
    lake.writer().close()  # any writer starting up cleans up after the dead one
    left = [f["name"] for top in ("raw", "_index") for f in lake.storage.walk_files(top)]
    (entry,) = lake.files()
    assert sorted(left) == sorted([entry.path, entry.ids])
    assert list((root / "_writers").iterdir()) == []


def test_content_is_identical_whatever_the_filesystem(tmp_path: Path):
    import uuid

    events = make_events(300, step=timedelta(minutes=17))
    local = Lake.open(str(tmp_path / "l"))
    memory = Lake.open(f"memory://{uuid.uuid4().hex}")
    for lk in (local, memory):
        lk.append_events(events.slice(0, 150))
        lk.append_events(events.slice(100))
        lk.compact(target_rows=1000)
    a, b = _content(local), _content(memory)
    assert a == b and len(a) == 300
    assert pa.Table.from_pylist(a).num_rows == 300
