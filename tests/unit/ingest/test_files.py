"""Finding input files and reading them in resumable blocks."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clickloop.errors import InvalidInputError, NotFoundError
from clickloop.ingest import files as files_mod
from clickloop.ingest.files import discover, read_blocks

LINES = b"".join(b'{"event_id":"e%d","pad":"%s"}\n' % (i, b"x" * (i % 50)) for i in range(3000))


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files_mod, "BLOCK_BYTES", 4096)


def test_directories_and_globs_expand_to_known_formats(tmp_path: Path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.jsonl").write_bytes(b"{}\n")
    (tmp_path / "d" / "sub" / "b.csv.gz").write_bytes(gzip.compress(b"event_id\n1\n"))
    (tmp_path / "d" / "_SUCCESS").write_bytes(b"")
    (tmp_path / "d" / ".hidden.jsonl").write_bytes(b"{}\n")
    (tmp_path / "d" / "notes.txt").write_bytes(b"hi")
    found = discover([str(tmp_path / "d")])
    assert [(Path(f.url).name, f.format, f.compression) for f in found] == [
        ("a.jsonl", "jsonl", "none"),
        ("b.csv.gz", "csv", "gzip"),
    ]
    assert [Path(f.url).name for f in discover([str(tmp_path / "d" / "*.jsonl")])] == ["a.jsonl"]


def test_missing_paths_and_unknown_formats_are_clear_errors(tmp_path: Path):
    with pytest.raises(NotFoundError, match="no such file"):
        discover([str(tmp_path / "nope.jsonl")])
    with pytest.raises(NotFoundError, match="no file matches"):
        discover([str(tmp_path / "*.jsonl")])
    (tmp_path / "data.bin").write_bytes(b"\x00\x01")
    with pytest.raises(InvalidInputError, match="cannot tell the format"):
        discover([str(tmp_path / "data.bin")])


def test_the_fingerprint_follows_the_content_not_the_name(tmp_path: Path):
    (tmp_path / "a.jsonl").write_bytes(LINES)
    (tmp_path / "copy.jsonl").write_bytes(LINES)
    (tmp_path / "other.jsonl").write_bytes(LINES.replace(b"e1", b"f1"))
    a, copy, other = discover([str(tmp_path / "a.jsonl"), str(tmp_path / "copy.jsonl"),
                               str(tmp_path / "other.jsonl")])  # fmt: skip
    assert a.key == copy.key != other.key


@pytest.mark.parametrize("compress", [False, True])
def test_blocks_cover_the_file_and_resume_from_any_checkpoint(
    tmp_path: Path, small_blocks, compress
):
    path = tmp_path / ("f.jsonl.gz" if compress else "f.jsonl")
    path.write_bytes(gzip.compress(LINES) if compress else LINES)
    (f,) = discover([str(path)])
    blocks = list(read_blocks(f))
    assert len(blocks) > 10 and blocks[-1].last and not any(b.last for b in blocks[:-1])
    assert b"".join(b.data for b in blocks) == LINES
    assert blocks[-1].end == {"offset": len(LINES)}
    assert all(b.data.endswith(b"\n") for b in blocks[:-1])  # whole lines only
    middle = blocks[len(blocks) // 2]
    rest = list(read_blocks(f, middle.end))
    after = blocks[len(blocks) // 2 + 1 :]
    assert b"".join(b.data for b in rest) == b"".join(b.data for b in after)


def test_a_line_longer_than_a_block_stays_whole(tmp_path: Path, small_blocks):
    big = b'{"event_id":"big","pad":"' + b"y" * 20000 + b'"}\n'
    (tmp_path / "f.jsonl").write_bytes(b'{"a":1}\n' + big + b'{"b":2}')
    (f,) = discover([str(tmp_path / "f.jsonl")])
    blocks = [b.data for b in read_blocks(f)]
    assert any(big in b for b in blocks) and blocks[-1] == b'{"b":2}'
    assert b"".join(blocks) == b'{"a":1}\n' + big + b'{"b":2}'


def test_csv_keeps_cells_as_text_and_sets_bad_rows_aside(tmp_path: Path):
    (tmp_path / "f.csv").write_bytes(b'event_id,price,note\n1,1.50,"a, b"\n2,3\n3,,x\n')
    (f,) = discover([str(tmp_path / "f.csv")])
    blocks = list(read_blocks(f))
    table = pa.concat_tables([b.table for b in blocks if b.table is not None])
    assert table.to_pylist() == [
        {"event_id": "1", "price": "1.50", "note": "a, b"},
        {"event_id": "3", "price": None, "note": "x"},
    ]
    assert [t for b in blocks for t, _ in b.invalid] == ["2,3"]
    assert blocks[-1].end == {"records": 3}
    resumed = list(read_blocks(f, {"records": 2}))
    assert sum(b.table.num_rows for b in resumed if b.table is not None) == 1


def test_parquet_resumes_inside_a_row_group(tmp_path: Path):
    table = pa.table({"event_id": [str(i) for i in range(1000)]})
    pq.write_table(table, tmp_path / "f.parquet", row_group_size=300)
    (f,) = discover([str(tmp_path / "f.parquet")])
    rest = pa.concat_tables([b.table for b in read_blocks(f, {"records": 450}) if b.table])
    assert rest.column("event_id").to_pylist() == [str(i) for i in range(450, 1000)]


def test_object_storage_urls_work_like_local_paths():
    root = f"memory://in-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{root}/x/a.jsonl.gz", gzip.compress(LINES))
    fs.pipe(f"{root}/x/b.jsonl", LINES)
    found = discover([f"{root}/x"])
    assert [f.url.rsplit("/", 1)[-1] for f in found] == ["a.jsonl.gz", "b.jsonl"]
    assert found[0].compression == "gzip"
    assert b"".join(b.data for b in read_blocks(found[0])) == LINES
