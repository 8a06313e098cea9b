"""What is particular to the embedded SQLite online store (the contract suite covers the rest)."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from clickloop.errors import BackendUnavailableError, DataError
from clickloop.project import Project
from clickloop.stores.base import open_online_store
from clickloop.stores.sqlite import SqliteOnlineStore

NOW = datetime.now(UTC)


def rows(entities, ts=NOW, **features) -> pa.Table:
    return pa.table(
        {
            "entity": entities,
            "_event_ts": pa.array([ts] * len(entities), pa.timestamp("us", "UTC")),
            **features,
        }
    )


def test_a_new_store_is_a_wal_database_with_a_format_version(tmp_path: Path):
    path = tmp_path / "deep" / "dir" / "online.sqlite"
    with SqliteOnlineStore(path) as store:
        store.write("fs", rows(["u"], n=[1]))
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == 1
    assert con.execute("PRAGMA page_size").fetchone()[0] == 8192
    assert con.execute("SELECT fs, entity FROM online_rows").fetchall() == [("fs", "u")]
    con.close()


def test_readers_are_not_blocked_by_an_open_write_transaction(tmp_path: Path):
    path = tmp_path / "online.sqlite"
    store = SqliteOnlineStore(path)
    store.write("fs", rows(["u"], n=[1]))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("DELETE FROM online_rows")  # not committed
    assert store.read("u", ["fs"]) == {"n": 1}
    other.execute("ROLLBACK")
    other.close()
    store.close()


def test_a_writer_waits_for_the_lock_then_fails_with_a_clear_error(tmp_path: Path):
    path = tmp_path / "online.sqlite"
    SqliteOnlineStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    store = SqliteOnlineStore(path, busy_timeout=timedelta(milliseconds=100))
    with pytest.raises(BackendUnavailableError, match="stayed locked by another writer"):
        store.write("fs", rows(["u"], n=[1]))
    holder.execute("ROLLBACK")
    holder.close()
    assert store.write("fs", rows(["u"], n=[1])) == 1  # usable once the lock is released
    store.close()


def test_files_from_a_newer_clickloop_or_not_sqlite_at_all_are_refused(tmp_path: Path):
    newer = tmp_path / "newer.sqlite"
    con = sqlite3.connect(newer)
    con.execute("PRAGMA user_version = 7")
    con.close()
    with pytest.raises(DataError, match="written by a newer clickloop"):
        SqliteOnlineStore(newer)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match="not a usable online store"):
        SqliteOnlineStore(junk)


def test_an_unusable_path_says_where(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BackendUnavailableError, match="cannot create the directory"):
        SqliteOnlineStore(tmp_path / "file" / "online.sqlite")


def test_purge_expired_removes_rows_that_already_read_as_absent(tmp_path: Path):
    path = tmp_path / "online.sqlite"
    store = SqliteOnlineStore(path)
    store.write("fs", rows(["old"], NOW - timedelta(days=2), n=[1]), ttl=timedelta(days=1))
    store.write("fs", rows(["new"], n=[2]), ttl=timedelta(days=1))
    assert store.purge_expired() == 1
    con = sqlite3.connect(path)
    assert con.execute("SELECT entity FROM online_rows").fetchall() == [("new",)]
    con.close()
    assert store.read("new", ["fs"]) == {"n": 2}
    store.close()


def test_open_online_store_follows_the_project_configuration(tmp_path: Path):
    (tmp_path / "clickloop.yaml").write_text("project: shop\n")
    with open_online_store(Project.load(tmp_path)) as store:
        assert isinstance(store, SqliteOnlineStore)
        assert store.path == tmp_path / ".clickloop" / "online.sqlite"
        store.write("fs", rows(["u"], n=[1]))
    (tmp_path / "clickloop.yaml").write_text(
        "stores: {online: {type: sqlite, path: data/features.db}}\n"
    )
    with open_online_store(Project.load(tmp_path)) as store:
        assert store.path == tmp_path / "data" / "features.db"
        assert store.read("u", ["fs"]) == {}
    assert (tmp_path / "data" / "features.db").exists()


def test_the_wal_is_copied_into_the_database_in_the_background(tmp_path: Path):
    path = tmp_path / "online.sqlite"
    store = SqliteOnlineStore(path)
    n = 60_000
    store.write("fs", rows([f"u{i:06d}" for i in range(n)], n=list(range(n)), s=["x" * 100] * n))
    deadline = time.monotonic() + 30
    while path.stat().st_size < 5_000_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.stat().st_size >= 5_000_000  # checkpointed without waiting for close()
    assert store.read(f"u{n - 1:06d}", ["fs"]) == {"n": n - 1, "s": "x" * 100}
    store.close()
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
