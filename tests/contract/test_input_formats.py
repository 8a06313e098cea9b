"""One contract for every input format: JSONL, CSV and Parquet exports of the same
records map to the same canonical events and the same quarantine reasons."""

from collections import Counter
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest

from clickloop.events import Mapping
from clickloop.simulate import simulate

READERS = {
    "jsonl": lambda p: pajson.read_json(p),
    "csv": lambda p: pacsv.read_csv(
        p,
        convert_options=pacsv.ConvertOptions(
            column_types={
                c: pa.string()
                for c in (
                    "event_id",
                    "ts",
                    "received_at",
                    "user_id",
                    "session_id",
                    "url",
                    "referrer",
                    "props",
                )
            },
            strings_can_be_null=True,
        ),
    ),
    "parquet": lambda p: pq.read_table(p),
}
NOW = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[pa.Table, Counter, dict]]:
    out = {}
    for fmt, read in READERS.items():
        root = tmp_path_factory.mktemp(fmt)
        summary = simulate(root, events=8000, days=2, seed=5, fmt=fmt, malformed=0.02)
        events, reasons = [], Counter()
        for f in summary["files"]:
            v = Mapping().validate_table(read(root / f["file"]), received_at=NOW)
            events.append(v.events)
            reasons.update(v.counts)
        out[fmt] = (pa.concat_tables(events).sort_by("event_id"), reasons, summary)
    return out


@pytest.mark.parametrize("fmt", list(READERS))
def test_each_format_reconciles_with_the_ground_truth(outcomes, fmt):
    events, reasons, summary = outcomes[fmt]
    expected = summary["expected"]
    assert dict(reasons) == expected["quarantined"]
    assert events.num_rows == expected["valid"] + expected["duplicates"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_every_format_gives_the_same_canonical_events(outcomes, fmt):
    base, _, _ = outcomes["jsonl"]
    other, _, _ = outcomes[fmt]
    if fmt == "parquet":  # a bad timestamp cannot be stored in a typed column: missing_ts there
        assert other.num_rows == base.num_rows
    for name in (
        "event_id",
        "ts",
        "received_at",
        "type",
        "user_id",
        "session_id",
        "url",
        "referrer",
    ):
        assert other.column(name).equals(base.column(name)), name
    assert other.column("props").to_pylist() == base.column("props").to_pylist()


def test_dedupe_by_event_id_leaves_exactly_the_valid_events(outcomes):
    events, _, summary = outcomes["jsonl"]
    assert len(set(events.column("event_id").to_pylist())) == summary["expected"]["valid"]
