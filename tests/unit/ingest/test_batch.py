"""Batch import as a user sees it: every record accounted for, once, however the run goes."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest

from clickloop.errors import ConflictError, InvalidInputError, NotFoundError, UsageError
from clickloop.ingest.batch import BatchImport, import_files, ingest_table
from clickloop.ingest.files import discover
from clickloop.lake import Lake, open_lake
from tests.unit.ingest.conftest import make_project

GOOD = b'{"event_id":"e%d","ts":"2026-11-01T00:%02d:00Z","type":"click","user_id":"u1"}'


def _lake(tmp_path: Path) -> Lake:
    return Lake.open(str(tmp_path / "lake"))


def _event_ids(lake: Lake) -> list[str]:
    return sorted(lake.events(columns=["event_id"]).to_table().column("event_id").to_pylist())


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv", "parquet"])
def test_every_format_reconciles_with_the_simulator_truth(tmp_path, sim_formats, fmt):
    events_dir, summary = sim_formats[fmt]
    lake = _lake(tmp_path)
    report = BatchImport(lake, source="sim").run(discover([str(events_dir)]))
    expected = summary["expected"]
    assert report.counts.received == summary["records"]
    assert report.counts.accepted == expected["valid"]
    assert report.counts.duplicates == expected["duplicates"]
    assert report.counts.quarantined == expected["quarantined"]
    assert lake.events().count_rows() == expected["valid"]
    assert lake.quarantine().count_rows() == sum(expected["quarantined"].values())
    stats = lake.stats()
    assert stats["sources"]["sim"]["balanced"] and stats["events"]["rows"] == expected["valid"]


def test_all_formats_give_the_same_events(tmp_path, sim_formats):
    ids = {}
    for fmt in ("jsonl", "csv", "parquet"):
        lake = Lake.open(str(tmp_path / fmt))
        BatchImport(lake).run(discover([str(sim_formats[fmt][0])]))
        ids[fmt] = _event_ids(lake)
    assert ids["jsonl"] == ids["csv"] == ids["parquet"]


def test_a_rerun_over_the_same_files_adds_nothing(tmp_path, sim_formats):
    lake = _lake(tmp_path)
    files = discover([str(sim_formats["jsonl"][0])])
    first = BatchImport(lake).run(files)
    version = lake.refresh().version
    again = BatchImport(lake).run(files)
    assert again.counts.received == 0 and again.commits == 0
    assert all(f["status"] == "skipped: already imported" for f in again.files)
    assert lake.refresh().version == version
    assert lake.events().count_rows() == first.counts.accepted


def test_a_copy_under_another_name_is_recognised(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(GOOD % (i, i) for i in range(10)))
    (tmp_path / "b.jsonl").write_bytes((tmp_path / "a.jsonl").read_bytes())
    lake = _lake(tmp_path)
    BatchImport(lake).run(discover([str(tmp_path / "a.jsonl")]))
    report = BatchImport(lake).run(discover([str(tmp_path / "b.jsonl")]))
    assert report.counts.received == 0 and lake.events().count_rows() == 10


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("fmt", ["jsonl.gz", "csv", "parquet"])
def test_an_interrupted_import_resumes_and_ends_exactly_once(
    tmp_path, sim_formats, fmt, monkeypatch
):
    from clickloop.ingest import files as files_mod

    monkeypatch.setattr(files_mod, "BLOCK_BYTES", 16 * 1024)
    monkeypatch.setattr(files_mod, "TABLE_ROWS", 100)
    events_dir, summary = sim_formats[fmt]
    files = discover([str(events_dir)])
    lake = _lake(tmp_path)
    seen = 0

    def stop_half_way(n: int) -> None:
        nonlocal seen
        seen += n
        if seen > summary["records"] // 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        BatchImport(lake, commit_every=400, progress=stop_half_way).run(files)
    partial = lake.stats()["total"]
    assert 0 < partial["received"] < summary["records"]
    rest = BatchImport(lake, commit_every=400).run(files)
    assert any(f["status"].startswith("resumed at record") for f in rest.files)
    total = lake.stats()["total"]
    assert total["received"] == summary["records"]
    assert total["accepted"] == summary["expected"]["valid"] == lake.events().count_rows()
    assert total["duplicates"] == summary["expected"]["duplicates"]
    assert total["quarantined"] == summary["expected"]["quarantined"]
    assert len(set(_event_ids(lake))) == lake.events().count_rows()
    if fmt == "jsonl.gz":  # every quarantined line points at its own line, resumed or not
        lines = {}
        for f in files:
            text = gzip.decompress(Path(f.url).read_bytes()).split(b"\n")
            lines.update({f"{f.url}:{i + 1}": line for i, line in enumerate(text)})
        q = lake.quarantine(columns=["origin", "payload"]).to_table().to_pylist()
        assert q and all(lines[r["origin"]] == r["payload"] for r in q)
    leftovers = [
        f for f in lake.storage.walk_files("raw") if f["name"].rsplit("/", 1)[-1][0] == "."
    ]
    assert leftovers == []


def test_object_storage_files_into_an_object_storage_lake():
    root = f"memory://it-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{root}/in/a.jsonl.gz", gzip.compress(b"\n".join(GOOD % (i, i) for i in range(20))))
    lake = Lake.open(f"{root}/lake")
    report = BatchImport(lake).run(discover([f"{root}/in/*.jsonl.gz"]))
    assert report.counts.accepted == 20 and lake.events().count_rows() == 20
    assert lake.files()[0].path.startswith("raw/events/dt=2026-11-01/")


def test_bad_lines_are_quarantined_with_their_exact_text_and_line(tmp_path):
    lines = [GOOD % (1, 1), b"{not json", b"", b'"a string"', b'{"event_id":"e2"}', GOOD % (3, 3)]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    lake = _lake(tmp_path)
    report = BatchImport(lake, source="logs").run(discover([str(tmp_path / "a.jsonl")]))
    assert report.counts.received == 5  # the blank line is not a record
    q = lake.quarantine().to_table().sort_by("origin").to_pylist()
    assert [(r["payload"], r["reason"], r["origin"].rsplit("/", 1)[-1]) for r in q] == [
        (b"{not json", "unparseable", "a.jsonl:2"),
        (b'"a string"', "not_an_object", "a.jsonl:4"),
        (b'{"event_id":"e2"}', "missing_ts", "a.jsonl:5"),
    ]
    assert all(r["source"] == "logs" and r["detail"] for r in q)
    assert _event_ids(lake) == ["e1", "e3"]


def test_csv_rows_that_do_not_parse_are_quarantined(tmp_path):
    (tmp_path / "a.csv").write_text(
        "event_id,ts,type,user_id\n"
        "e1,2026-11-01T00:00:00Z,click,u1\n"
        "e2,2026-11-01T00:00:00Z,click\n"
        "e3,2026-11-01T00:01:00Z,click,u1\n"
    )
    lake = _lake(tmp_path)
    report = BatchImport(lake).run(discover([str(tmp_path / "a.csv")]))
    assert report.counts.accepted == 2 and report.counts.quarantined == {"unparseable": 1}
    q = lake.quarantine().to_table()
    assert q.column("payload").to_pylist() == [b"e2,2026-11-01T00:00:00Z,click"]


def test_a_files_source_maps_its_columns(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "p.csv").write_text(
        "id,time,uid,page,price\n"
        "a1,1793491200000,u1,https://shop.example.com/items/1/2,12.5\n"
        "a2,not-a-time,u2,https://shop.example.com/,3\n"
    )
    project = make_project(
        tmp_path / "proj",
        "sources:\n"
        "  partner:\n"
        "    type: files\n"
        f"    path: {tmp_path / 'data'}/*.csv\n"
        "    columns:\n"
        "      event_id: id\n"
        "      ts: {from: time, format: epoch_ms}\n"
        "      type: {const: page_view}\n"
        "      user_id: uid\n"
        "      url: page\n",
    )
    report = import_files(project, source="partner")
    assert report.source == "partner" and report.counts.quarantined == {"bad_ts": 1}
    lake = open_lake(project)
    (row,) = lake.events().to_table().to_pylist()
    assert (row["event_id"], row["type"], dict(row["props"])) == (
        "a1",
        "page_view",
        {"price": "12.5"},
    )
    assert lake.stats()["sources"]["partner"]["received"] == 2


def test_unknown_sources_and_missing_paths_are_clear_errors(project):
    with pytest.raises(NotFoundError, match="no source named 'nope'"):
        import_files(project, source="nope")
    with pytest.raises(UsageError, match="nothing to import"):
        import_files(project)


def test_a_mapped_column_missing_from_a_file_says_which_file(tmp_path):
    (tmp_path / "a.csv").write_text("x\n1\n")
    from clickloop.events.mapping import Mapping

    mapping = Mapping.model_validate({"columns": {"event_id": "id"}})
    with pytest.raises(InvalidInputError, match=r"a\.csv.*'id'"):
        BatchImport(_lake(tmp_path), mapping=mapping).run(discover([str(tmp_path / "a.csv")]))


def test_two_imports_of_the_same_file_cannot_both_commit_it(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(GOOD % (i, i % 60) for i in range(500)))
    files = discover([str(tmp_path / "a.jsonl")])
    lake = _lake(tmp_path)
    started = False

    def meanwhile(n: int) -> None:
        nonlocal started
        if not started:
            started = True
            BatchImport(Lake.open(lake.storage.root)).run(files)  # another process, in effect

    from clickloop.ingest import files as files_mod

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(files_mod, "BLOCK_BYTES", 4096)
        with pytest.raises(ConflictError, match="another process is importing"):
            BatchImport(lake, commit_every=100, progress=meanwhile).run(files)
    assert lake.events().count_rows() == 500
    assert lake.stats()["total"]["received"] == 500


def test_ingest_table_validates_raw_records(tmp_path):
    lake = _lake(tmp_path)
    table = pa.table(
        {
            "event_id": ["a", "b", None],
            "ts": ["2026-11-01T00:00:00Z", "garbage", "2026-11-01T00:00:00Z"],
            "type": ["click"] * 3,
            "user_id": ["u"] * 3,
        }
    )
    counts = ingest_table(lake, table, source="t")
    assert (counts.accepted, counts.quarantined) == (1, {"bad_ts": 1, "missing_event_id": 1})
    payloads = sorted(lake.quarantine().to_table().column("payload").to_pylist())
    assert payloads[0].startswith(b'{"event_id":"b"')
