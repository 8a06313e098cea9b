"""Input files for batch import: discovery, fingerprints, and reading them in blocks.

* :func:`discover` expands paths, directories and globs — local or any fsspec
  URL (``s3://``, ``gs://``, ``memory://``) — into files with their format
  (JSONL, CSV, Parquet) and compression (gzip is recognised by its magic bytes).
* A file's **fingerprint** identifies its content: a hash of the bytes for
  local files, the store's checksum/ETag (or a hash) for objects. Imports
  record how far they got under it, so a re-run skips what is done and an
  interrupted run resumes — whatever the file's name or location.
* :func:`read_blocks` yields blocks with the position after each, which is
  what a checkpoint records: a byte offset for JSONL (into the decompressed
  stream), a record count for CSV and Parquet.

>>> files = discover(["data/*.jsonl.gz"])                     # doctest: +SKIP
>>> for block in read_blocks(files[0]): ...                   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import xxhash
from fsspec.implementations.local import LocalFileSystem

from clickloop.errors import ConfigError, InvalidInputError, NotFoundError

log = logging.getLogger(__name__)

BLOCK_BYTES: Final = 16 * 1024 * 1024  # ~45k events: amortises per-call costs of validation
TABLE_ROWS: Final = 64 * 1024
FINGERPRINT_THREADS: Final = 4
_GLOB: Final = re.compile(r"[*?\[]")
_EXTENSIONS: Final = {
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "json": "jsonl",
    "csv": "csv",
    "parquet": "parquet",
    "pq": "parquet",
}
_CHECKSUM_KEYS: Final = ("ETag", "etag", "md5Hash", "md5", "crc32c", "checksum", "sha256")


@dataclass
class InputFile:
    """One file to import."""

    url: str  # as shown to people
    fs: Any = field(repr=False)
    path: str = ""
    size: int = 0
    format: str = "jsonl"  # jsonl | csv | parquet
    compression: str = "none"  # none | gzip
    fingerprint: str = ""

    @property
    def key(self) -> str:
        """The checkpoint key of this file's content."""
        return f"file:{self.fingerprint}"


@dataclass
class Block:
    """A piece of one file, in order; ``end`` is the file's checkpoint after it."""

    file: InputFile
    seq: int
    data: bytes | None = None  # JSONL bytes (whole lines)
    table: pa.Table | None = None  # CSV / Parquet rows
    invalid: list[tuple[str, int]] = field(default_factory=list)  # CSV rows that do not parse
    first_line: int = 0  # JSONL: 0-based line number of the first line (set by the importer)
    first_record: int = 0  # CSV / Parquet: 0-based record number of the first row
    end: dict[str, Any] = field(default_factory=dict)
    last: bool = False


def discover(
    paths: list[str],
    *,
    fmt: str = "auto",
    compression: str = "auto",
    storage_options: dict[str, Any] | None = None,
) -> list[InputFile]:
    """Expand ``paths`` (files, directories, globs; local or URLs) into input files."""
    if not paths:
        raise NotFoundError("no input paths given", hint="pass PATH… or a configured --source")
    found: dict[tuple[int, str], InputFile] = {}
    for raw in paths:
        try:
            fs, path = fsspec.core.url_to_fs(raw, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"cannot open {raw!r}: {exc}") from exc
        explicit = True
        if _GLOB.search(path):
            matches = [p for p in sorted(fs.glob(path)) if fs.isfile(p)]
            explicit = False
            if not matches:
                raise NotFoundError(f"no file matches {raw!r}", hint="check the pattern")
        elif fs.isdir(path):
            matches = sorted(fs.find(path))
            explicit = False
        elif fs.isfile(path):
            matches = [path]
        else:
            raise NotFoundError(f"no such file or directory: {raw}")
        for p in matches:
            name = p.rsplit("/", 1)[-1]
            if not explicit and (name.startswith((".", "_"))):
                continue  # hidden files, _SUCCESS markers, …
            kind = _format_of(name) if fmt == "auto" else fmt
            if kind is None:
                if not explicit:
                    log.debug("skipping %s: unknown extension", p)
                    continue
                kind = _sniff_format(fs, p, raw)
            url = p if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(p)
            f = InputFile(url=url, fs=fs, path=p, format=kind)
            found.setdefault((id(fs), p), f)
    files = sorted(found.values(), key=lambda f: f.url)
    for f in files:
        f.size = int(f.fs.size(f.path))
        f.compression = _compression_of(f) if compression == "auto" else compression
        if f.format == "parquet" and f.compression != "none":
            raise InvalidInputError(f"{f.url}: Parquet files are compressed inside; not gzip")
    # hashing releases the GIL and object-store lookups wait on the network: a few files
    # at once (the import cannot start before every fingerprint is known)
    if len(files) > 1:
        with ThreadPoolExecutor(min(FINGERPRINT_THREADS, len(files))) as pool:
            for f, fp in zip(files, pool.map(fingerprint, files), strict=True):
                f.fingerprint = fp
    else:
        for f in files:
            f.fingerprint = fingerprint(f)
    return files


def _format_of(name: str) -> str | None:
    stem = re.sub(r"\.(gz|gzip)$", "", name.lower())
    ext = stem.rsplit(".", 1)[-1] if "." in stem else ""
    return _EXTENSIONS.get(ext)


def _sniff_format(fs: Any, path: str, raw: str) -> str:
    with fs.open(path, "rb") as f:
        head = f.read(4)
    if head == b"PAR1":
        return "parquet"
    raise InvalidInputError(
        f"cannot tell the format of {raw} from its name",
        hint="name it .jsonl, .csv or .parquet (optionally .gz), or set the source's format",
    )


def _compression_of(f: InputFile) -> str:
    with f.fs.open(f.path, "rb") as fh:
        return "gzip" if fh.read(2) == b"\x1f\x8b" else "none"


def fingerprint(f: InputFile) -> str:
    """What identifies the file's content: size plus a content hash (or the store's)."""
    if not isinstance(f.fs, LocalFileSystem):
        info = f.fs.info(f.path)
        for key in _CHECKSUM_KEYS:
            value = info.get(key)
            if value:
                return f"{f.size}-{key.lower()}-{str(value).strip(chr(34))}"
    h = xxhash.xxh3_128()
    with f.fs.open(f.path, "rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            h.update(chunk)
    return f"{f.size}-xxh3-{h.hexdigest()}"


# -- reading -------------------------------------------------------------------------------


def _stream(f: InputFile) -> Any:
    """A pyarrow input stream of the (decompressed) content."""
    if isinstance(f.fs, LocalFileSystem):
        raw = pa.OSFile(f.path, "rb")
    else:
        raw = pa.PythonFile(f.fs.open(f.path, "rb"), mode="r")
    if f.compression == "gzip":
        return pa.CompressedInputStream(raw, "gzip")
    return raw


def read_blocks(
    f: InputFile, start: dict[str, Any] | None = None, *, csv_options: Any = None
) -> Iterator[Block]:
    """Blocks of ``f`` from checkpoint ``start`` (``None`` = the beginning); the last
    block of a file (perhaps empty) has ``last=True``. ``csv_options`` is a
    :class:`~clickloop.config.infra.CsvOptions`."""
    if f.format == "jsonl":
        yield from _jsonl_blocks(f, start or {})
    elif f.format == "csv":
        opts = {}
        if csv_options is not None:
            opts = {
                "delimiter": csv_options.delimiter,
                "quote": csv_options.quote,
                "header": csv_options.header,
            }
        yield from csv_blocks(f, start or {}, **opts)
    elif f.format == "parquet":
        yield from _parquet_blocks(f, start or {})
    else:
        raise InvalidInputError(f"{f.url}: unknown format {f.format!r}")


def _jsonl_blocks(f: InputFile, start: dict[str, Any]) -> Iterator[Block]:
    """Whole-line blocks. Line numbers are counted by whoever parses the blocks (the
    parser scans for newlines anyway), so reading stays a plain copy of bytes."""
    offset = int(start.get("offset", 0))
    stream = _stream(f)
    seekable = f.compression == "none"
    try:
        if offset:
            if seekable:
                stream.seek(offset)
            else:
                _skip(stream, offset)
        pending = b""
        seq = 0
        while True:
            chunk = stream.read(BLOCK_BYTES)
            if not chunk:  # the rest: a last line without newline, or nothing
                end = {"offset": offset + len(pending)}
                yield Block(f, seq, data=pending, end=end, last=True)
                return
            buf = pending + chunk if pending else chunk
            cut = buf.rfind(b"\n")
            if cut < 0:  # a line longer than a block: keep reading
                pending = buf
                continue
            if seekable and cut + 1 < len(buf) and not pending:
                # read the partial last line again with the next block instead of copying it
                data, pending = buf[: cut + 1], b""
                stream.seek(offset + cut + 1)
            else:
                data, pending = buf[: cut + 1], buf[cut + 1 :]
            offset += len(data)
            yield Block(f, seq, data=data, end={"offset": offset})
            seq += 1
    finally:
        stream.close()


def _skip(stream: Any, n: int) -> None:
    while n > 0:
        got = stream.read(min(n, BLOCK_BYTES))
        if not got:
            raise InvalidInputError("file is shorter than its recorded checkpoint")
        n -= len(got)


def csv_blocks(
    f: InputFile, start: dict[str, Any], *, delimiter: str = ",", quote: str = '"',
    header: bool = True,
) -> Iterator[Block]:  # fmt: skip
    """CSV rows as string columns (cells kept exactly as written; empty → null)."""
    done = int(start.get("records", 0))
    names = _csv_header(f, delimiter, quote, header)
    invalid: list[tuple[str, int]] = []

    def on_invalid(row: Any) -> str:
        invalid.append((row.text, row.number))
        return "skip"

    stream = _stream(f)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(
                use_threads=False,
                block_size=BLOCK_BYTES,
                column_names=names,
                skip_rows=1 if header else 0,
                skip_rows_after_names=done,
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter,
                quote_char=quote,
                newlines_in_values=True,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        seq = 0
        records = done
        for batch in reader:
            table = pa.Table.from_batches([batch])
            bad, invalid[:] = list(invalid), []
            block = Block(f, seq, table=table, invalid=bad, first_record=records)
            records += table.num_rows + len(bad)
            block.end = {"records": records}
            seq += 1
            yield block
        yield Block(f, seq, table=None, invalid=list(invalid), first_record=records,
                    end={"records": records + len(invalid)}, last=True)  # fmt: skip
    except pa.ArrowInvalid as exc:
        raise InvalidInputError(f"{f.url}: not readable as CSV: {exc}") from exc
    finally:
        stream.close()


def _csv_header(f: InputFile, delimiter: str, quote: str, header: bool) -> list[str]:
    stream = _stream(f)
    try:
        head = stream.read(1024 * 1024)
    finally:
        stream.close()
    text = head.decode("utf-8", "replace")
    first = next(csv.reader(io.StringIO(text), delimiter=delimiter, quotechar=quote), None)
    if first is None:
        return []
    if not header:
        return [f"f{i}" for i in range(len(first))]
    if len(set(first)) != len(first):
        raise InvalidInputError(f"{f.url}: the CSV header repeats a column name: {first}")
    return first


def _parquet_blocks(f: InputFile, start: dict[str, Any]) -> Iterator[Block]:
    done = int(start.get("records", 0))
    handle = f.fs.open(f.path, "rb")
    try:
        try:
            pf = pq.ParquetFile(handle)
        except pa.ArrowInvalid as exc:
            raise InvalidInputError(f"{f.url}: not a readable Parquet file: {exc}") from exc
        meta = pf.metadata
        groups: list[int] = []
        skip = seen = 0
        for i in range(meta.num_row_groups):
            rows = meta.row_group(i).num_rows
            if not groups and seen + rows <= done:  # whole groups already imported
                seen += rows
                continue
            if not groups:
                skip = done - seen
            groups.append(i)
        records = done
        seq = 0
        if groups:
            for batch in pf.iter_batches(batch_size=TABLE_ROWS, row_groups=groups):
                table = pa.Table.from_batches([batch])
                if skip:
                    cut = min(skip, table.num_rows)
                    table, skip = table.slice(cut), skip - cut
                    if table.num_rows == 0:
                        continue
                block = Block(f, seq, table=table, first_record=records)
                records += table.num_rows
                block.end = {"records": records}
                seq += 1
                yield block
        yield Block(f, seq, first_record=records, end={"records": records}, last=True)
    finally:
        handle.close()
